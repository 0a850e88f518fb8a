# Minimal processCcd configuration for DWF node jobs (hscPipe 6/7, Gen2 butler).
# Read by `processCcd.py REPO --rerun RERUN --id visit=V ccd=C --configfile processCcd_dwf.py`.
# Instrument signature removal with the repository's CALIB (bias, dark, flat), no fringe
# (DWF observes in g), characterisation and astrometric calibration; photometric calibration
# is left to the later difference-imaging stage.
# flake8: noqa
config.isr.doBias = True
config.isr.doDark = True
config.isr.doFlat = True
config.isr.doFringe = False
config.isr.doWrite = False
config.charImage.repair.doCosmicRay = True
config.charImage.detection.thresholdValue = 5.0
config.doCalibrate = True
config.calibrate.doAstrometry = True
config.calibrate.doPhotoCal = False
config.calibrate.requireAstrometry = False
