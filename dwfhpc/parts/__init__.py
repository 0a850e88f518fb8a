"""Parts: the unit of delivery. An exposure's CCDs in K tarballs, each with a manifest.

``pack`` (exposure -> parts), ``manifest``, ``schema`` (the one check of a manifest and of a task spec's
identity), ``verify`` (a part against its manifest; members out safely), ``fidelity`` (what a codec changes).
"""

from .manifest import SCHEMA, Manifest, Member, read_manifest
from .schema import SchemaError, check_exposure_identity, check_manifest_data
from .pack import Part, pack_exposure, split_into_parts
from .verify import extract_member, restore_ccd, unpack_part, verify_part

__all__ = ["SCHEMA", "SchemaError", "check_exposure_identity", "check_manifest_data", "Manifest", "Member", "read_manifest", "Part", "pack_exposure", "split_into_parts",
           "extract_member", "restore_ccd", "unpack_part", "verify_part"]
