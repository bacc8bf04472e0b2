"""Classic DICOM networking (DIMSE, PS3.7) beside DICOMweb: the listener and its handlers,
thin callers of the Catalog like the HTTP handlers."""
