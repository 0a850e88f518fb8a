"""dwfhpc: telescope-to-supercomputer transfer and calibration for the Deeper, Wider, Faster survey."""

__version__ = "0.1.0"
