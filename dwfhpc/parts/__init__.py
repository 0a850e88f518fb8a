"""Parts: the unit of delivery. An exposure's CCDs in K tarballs, each with a manifest."""

from .manifest import SCHEMA, Manifest, Member, read_manifest
from .schema import SchemaError, check_exposure_identity, check_manifest_data
from .pack import Part, pack_exposure, split_into_parts
from .verify import extract_member, restore_ccd, unpack_part, verify_part

__all__ = ["SCHEMA", "SchemaError", "check_exposure_identity", "check_manifest_data", "Manifest", "Member", "read_manifest", "Part", "pack_exposure", "split_into_parts",
           "extract_member", "restore_ccd", "unpack_part", "verify_part"]
