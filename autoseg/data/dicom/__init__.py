"""DICOM input and output: image series (`series`), DICOM-SEG (`seg`), raw datasets from DICOM (`convert`).

pydicom and highdicom are an optional extra (`pip install -e ".[dicom]"`); `deps` imports them once, guarded
(highdicom on the first DICOM-SEG), so the rest of autoseg imports without them and a DICOM function called without
them raises an error naming the extra.
"""
