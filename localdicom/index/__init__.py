"""The in-memory index of studies, series and instances (:mod:`.index`), its records
(:mod:`.records`), and where a query's conditions are decided (:mod:`.plan`)."""

from localdicom.index.index import SCHEMA, Index
from localdicom.index.plan import Plan
from localdicom.index.records import InstanceRecord, Record, SeriesRecord, StudyRecord

__all__ = ["SCHEMA", "Index", "InstanceRecord", "Plan", "Record", "SeriesRecord", "StudyRecord"]
