"""The options of PS3.15 Annex E localdicom offers (:class:`DeidOption`, by the names
``--deid-option`` takes) and their columns of Table E.1-1; apart from
:mod:`.confidentiality` so that the commands can offer the options without importing the
Basic Profile's tables.

The columns are data only, as the standard publishes them: each dict maps a tag to the
action the option requires instead of the Basic Profile's (K keep, C clean). Extracted from
the machine-readable copy of the table in innolitics' dicom-standard (MIT; its
confidentiality_profile_attributes .json, the 2020 edition of PS3.15). An attribute the
standard added to an option column later is missing here and gets the Basic Profile's
action: more is removed, never less. The Basic Profile column itself comes from the
dicom-anonymizer package (:mod:`.confidentiality`).
"""

from enum import StrEnum


class DeidOption(StrEnum):
    """The options of PS3.15 E.3 offered, by the name given to --deid-option."""

    RETAIN_MODIFIED_DATES = "retain-modified-dates"
    RETAIN_PATIENT_CHARACTERISTICS = "retain-patient-characteristics"
    RETAIN_DEVICE_IDENTITY = "retain-device-identity"
    RETAIN_SAFE_PRIVATE = "retain-safe-private"
    CLEAN_DESCRIPTORS = "clean-descriptors"


#: rtnLongModifDatesOpt column.
MODIFIED_DATES: dict[int, str] = {
    0x00080015: "C",  # InstanceCoercionDateTime
    0x00080020: "C",  # StudyDate
    0x00080021: "C",  # SeriesDate
    0x00080022: "C",  # AcquisitionDate
    0x00080023: "C",  # ContentDate
    0x00080024: "C",  # OverlayDate
    0x00080025: "C",  # CurveDate
    0x0008002A: "C",  # AcquisitionDateTime
    0x00080030: "C",  # StudyTime
    0x00080031: "C",  # SeriesTime
    0x00080032: "C",  # AcquisitionTime
    0x00080033: "C",  # ContentTime
    0x00080034: "C",  # OverlayTime
    0x00080035: "C",  # CurveTime
    0x00080201: "C",  # TimezoneOffsetFromUTC
    0x001021D0: "C",  # LastMenstrualDate
    0x0016008D: "C",  # GPSDateStamp
    0x00189369: "C",  # SourceStartDateTime
    0x0018936A: "C",  # SourceEndDateTime
    0x00189516: "C",  # StartAcquisitionDateTime
    0x00189517: "C",  # EndAcquisitionDateTime
    0x00340007: "C",  # FrameOriginTimestamp
    0x00380020: "C",  # AdmittingDate
    0x00380021: "C",  # AdmittingTime
    0x00400002: "C",  # ScheduledProcedureStepStartDate
    0x00400003: "C",  # ScheduledProcedureStepStartTime
    0x00400004: "C",  # ScheduledProcedureStepEndDate
    0x00400005: "C",  # ScheduledProcedureStepEndTime
    0x00400244: "C",  # PerformedProcedureStepStartDate
    0x00400245: "C",  # PerformedProcedureStepStartTime
    0x00400250: "C",  # PerformedProcedureStepEndDate
    0x00400251: "C",  # PerformedProcedureStepEndTime
    0x00404005: "C",  # ScheduledProcedureStepStartDateTime
    0x00404008: "C",  # ScheduledProcedureStepExpirationDateTime
    0x00404010: "C",  # ScheduledProcedureStepModificationDateTime
    0x00404011: "C",  # ExpectedCompletionDateTime
    0x00404050: "C",  # PerformedProcedureStepStartDateTime
    0x00404051: "C",  # PerformedProcedureStepEndDateTime
    0x00404052: "C",  # ProcedureStepCancellationDateTime
    0x0040A192: "C",  # ObservationDateTrial
    0x0040A193: "C",  # ObservationTimeTrial
    0x30080054: "C",  # FirstTreatmentDate
    0x30080056: "C",  # MostRecentTreatmentDate
    0x30080250: "C",  # TreatmentDate
    0x30080251: "C",  # TreatmentTime
    0x300A0006: "C",  # RTPlanDate
    0x300A0007: "C",  # RTPlanTime
    0x3010004C: "C",  # IntendedPhaseStartDate
    0x3010004D: "C",  # IntendedPhaseEndDate
}

#: rtnPatCharsOpt column.
PATIENT_CHARACTERISTICS: dict[int, str] = {
    0x00100040: "K",  # PatientSex
    0x00101010: "K",  # PatientAge
    0x00101020: "K",  # PatientSize
    0x00101030: "K",  # PatientWeight
    0x00102110: "C",  # Allergies
    0x00102160: "K",  # EthnicGroup
    0x001021A0: "K",  # SmokingStatus
    0x001021C0: "K",  # PregnancyStatus
    0x00102203: "K",  # PatientSexNeutered
    0x00380050: "C",  # SpecialNeeds
    0x00380500: "C",  # PatientState
    0x00400012: "C",  # PreMedication
}

#: rtnDevIdOpt column.
DEVICE_IDENTITY: dict[int, str] = {
    0x00081010: "K",  # StationName
    0x0016004E: "K",  # LensSpecification
    0x0016004F: "K",  # LensMake
    0x00160050: "K",  # LensModel
    0x00160051: "K",  # LensSerialNumber
    0x00181000: "K",  # DeviceSerialNumber
    0x00181002: "K",  # DeviceUID
    0x00181004: "K",  # PlateID
    0x00181005: "K",  # GeneratorID
    0x00181007: "K",  # CassetteID
    0x00181008: "K",  # GantryID
    0x00181009: "K",  # UniqueDeviceIdentifier
    0x0018100A: "K",  # UDISequence
    0x0018100B: "K",  # ManufacturerDeviceClassUID
    0x0018700A: "K",  # DetectorID
    0x00189367: "K",  # XRaySourceID
    0x00189371: "K",  # XRayDetectorID
    0x00189373: "K",  # XRayDetectorLabel
    0x00321020: "K",  # ScheduledStudyLocation
    0x00321021: "K",  # ScheduledStudyLocationAETitle
    0x00400001: "K",  # ScheduledStationAETitle
    0x00400010: "K",  # ScheduledStationName
    0x00400011: "K",  # ScheduledProcedureStepLocation
    0x00400241: "K",  # PerformedStationAETitle
    0x00400242: "K",  # PerformedStationName
    0x00404025: "K",  # ScheduledStationNameCodeSequence
    0x00404027: "K",  # ScheduledStationGeographicLocationCodeSequence
    0x00404028: "K",  # PerformedStationNameCodeSequence
    0x00404030: "K",  # PerformedStationGeographicLocationCodeSequence
    0x00500020: "K",  # DeviceDescription
    0x30080105: "K",  # SourceSerialNumber
    0x300A00B2: "K",  # TreatmentMachineName
    0x300A0216: "K",  # SourceManufacturer
    0x3010002D: "K",  # DeviceLabel
    0x30100043: "K",  # ManufacturerDeviceIdentifier
}

#: cleanDescOpt column.
DESCRIPTORS: dict[int, str] = {
    0x00081030: "C",  # StudyDescription
    0x0008103E: "C",  # SeriesDescription
    0x00081080: "C",  # AdmittingDiagnosesDescription
    0x00081084: "C",  # AdmittingDiagnosesCodeSequence
    0x00082111: "C",  # DerivationDescription
    0x00084000: "C",  # IdentifyingComments
    0x00102000: "C",  # MedicalAlerts
    0x00102110: "C",  # Allergies
    0x00102180: "C",  # Occupation
    0x001021B0: "C",  # AdditionalPatientHistory
    0x00104000: "C",  # PatientComments
    0x00120051: "C",  # ClinicalTrialTimePointDescription
    0x00120072: "C",  # ClinicalTrialSeriesDescription
    0x0016002B: "C",  # MakerNote
    0x0016004B: "C",  # DeviceSettingDescription
    0x00180010: "C",  # ContrastBolusAgent
    0x00181030: "C",  # ProtocolName
    0x00181400: "C",  # AcquisitionDeviceProcessingDescription
    0x00184000: "C",  # AcquisitionComments
    0x00189185: "C",  # RespiratoryMotionCompensationTechniqueDescription
    0x0018937B: "C",  # MultienergyAcquisitionDescription
    0x0018937F: "C",  # DecompositionDescription
    0x00189424: "C",  # AcquisitionProtocolDescription
    0x0018A003: "C",  # ContributionDescription
    0x00204000: "C",  # ImageComments
    0x00209158: "C",  # FrameComments
    0x00321030: "C",  # ReasonForStudy
    0x00321060: "C",  # RequestedProcedureDescription
    0x00321066: "C",  # ReasonForVisit
    0x00321067: "C",  # ReasonForVisitCodeSequence
    0x00321070: "C",  # RequestedContrastAgent
    0x00324000: "C",  # StudyComments
    0x00380040: "C",  # DischargeDiagnosisDescription
    0x00380062: "C",  # ServiceEpisodeDescription
    0x00380500: "C",  # PatientState
    0x00384000: "C",  # VisitComments
    0x00400007: "C",  # ScheduledProcedureStepDescription
    0x00400254: "C",  # PerformedProcedureStepDescription
    0x00400275: "C",  # RequestAttributesSequence
    0x00400280: "C",  # CommentsOnThePerformedProcedureStep
    0x0040051A: "C",  # ContainerDescription
    0x00400600: "C",  # SpecimenShortDescription
    0x00400602: "C",  # SpecimenDetailedDescription
    0x00401002: "C",  # ReasonForTheRequestedProcedure
    0x0040100A: "C",  # ReasonForRequestedProcedureCodeSequence
    0x00401400: "C",  # RequestedProcedureComments
    0x00402001: "C",  # ReasonForTheImagingServiceRequest
    0x00402400: "C",  # ImagingServiceRequestComments
    0x00500021: "C",  # LongDeviceDescription
    0x22000002: "C",  # LabelText
    0x300A0002: "C",  # RTPlanLabel
    0x300A0003: "C",  # RTPlanName
    0x300A0004: "C",  # RTPlanDescription
    0x300A000E: "C",  # PrescriptionDescription
    0x300A0016: "C",  # DoseReferenceDescription
    0x300A0072: "C",  # FractionGroupDescription
    0x300A00C3: "C",  # BeamDescription
    0x300A00DD: "C",  # BolusDescription
    0x300A0196: "C",  # FixationDeviceDescription
    0x300A01A6: "C",  # ShieldingDeviceDescription
    0x300A01B2: "C",  # SetupTechniqueDescription
    0x300A02EB: "C",  # CompensatorDescription
    0x300A0608: "C",  # TreatmentPositionGroupLabel
    0x300A0619: "C",  # RadiationDoseIdentificationLabel
    0x300A0623: "C",  # RadiationDoseInVivoMeasurementLabel
    0x300A062A: "C",  # RTToleranceSetLabel
    0x300A0676: "C",  # EquipmentFrameOfReferenceDescription
    0x300A067C: "C",  # RadiationGenerationModeLabel
    0x300A067D: "C",  # RadiationGenerationModeDescription
    0x300C0113: "C",  # ReasonForOmissionDescription
    0x3010000F: "C",  # ConceptualVolumeCombinationDescription
    0x30100017: "C",  # ConceptualVolumeDescription
    0x30100033: "C",  # UserContentLabel
    0x30100034: "C",  # UserContentLongLabel
    0x30100035: "C",  # EntityLabel
    0x30100036: "C",  # EntityName
    0x30100037: "C",  # EntityDescription
    0x30100038: "C",  # EntityLongLabel
    0x30100054: "C",  # RTPrescriptionLabel
    0x30100056: "C",  # RTTreatmentApproachLabel
    0x3010005A: "C",  # RTPhysicianIntentNarrative
    0x3010005C: "C",  # ReasonForSuperseding
    0x30100061: "C",  # PriorTreatmentDoseDescription
    0x30100077: "C",  # TreatmentSite
    0x3010007A: "C",  # TreatmentTechniqueNotes
    0x3010007B: "C",  # PrescriptionNotes
    0x3010007F: "C",  # FractionationNotes
    0x30100081: "C",  # PrescriptionNotesSequence
    0x4008010B: "C",  # InterpretationText
    0x40080115: "C",  # InterpretationDiagnosisDescription
    0x40080300: "C",  # Impressions
    0x40084000: "C",  # ResultsComments
}
