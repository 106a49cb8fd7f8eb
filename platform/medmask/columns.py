"""The leaf vocabulary: column names, flag columns and label codes shared by every room.

A Sample is one row of a Ray Data dataset (or of a manifest before decoding). Code refers to
these constants, never to string literals, so a rename happens in one place. This module
imports nothing of medmask (and nothing but the standard library).
"""

from __future__ import annotations

from typing import Final

# --- manifest / sample columns -------------------------------------------------------------
ID: Final = "id"  # unique image id within a dataset (str)
PATH: Final = "path"  # absolute path of the image file (str), manifests only
PATIENT: Final = "patient_id"  # patient identifier used for patient-level splits (str)
IMAGE: Final = "image"  # H x W float32 in [0, 1] after decode
IMAGE_KEY: Final = "image_key"  # int64 hash of the image id: seeds per-image masks
ORGANS: Final = "organs"  # H x W uint8 label map (see ORGAN_* below)
ORGANS_PATH: Final = "organs_path"  # path of an organ/lung mask file, manifests only
LESION: Final = "lesion"  # H x W uint8 binary lesion mask
LESION_PATH: Final = "lesion_path"  # path of a lesion mask file or label volume, manifests only
SLICE_INDEX: Final = "slice_index"  # int index along a volume's last spatial axis (-1: a 2-D file)
IMAGE_CHANNEL: Final = "image_channel"  # int channel read from a multi-channel file (-1: gray)
GAZE: Final = "gaze"  # H x W float32 gaze heatmap
ANATOMY: Final = "anatomy"  # H x W bool anatomical region (evaluation maskers)
LABEL: Final = "label"  # int class index for single-label sets
LABEL_NAME: Final = "label_name"  # str class name for single-label sets
LABELS: Final = "labels"  # multi-hot float32 vector for multi-label sets
SPLIT: Final = "split"  # "train" | "val" | "test"
SOURCE: Final = "source"  # dataset name, e.g. "phantom", "covid_radiography"
MASK: Final = "mask"  # bool [N] patch mask, True = masked
MASKED_IMAGE: Final = "masked_image"  # image with the masked patches zeroed
PATCH_VALID: Final = "patch_valid"  # bool [N] patch validity (overlaps the region of interest)
PATCH_REWARDS: Final = "patch_rewards"  # float32 [N] AHM per-patch rewards (env info, RL batch)
ACTION_USED: Final = "action_used"  # bool, RL env-to-module: False = autoreset step
MASK_SEED: Final = "mask_seed"  # int64 per-image mask seed from (seed, epoch, image key)
SUBSET_COPY: Final = "subset_copy"  # int: which copy of a repeated small subset (keys its views)

# --- flag and statistics columns of the preprocessing stages --------------------------------
# Bad input never disappears silently: each fallback is a bool column, summed by the pipeline.
BAD_IMAGE: Final = "bad_image"  # the image could not be decoded (kept, flagged, counted)
BAD_MASK: Final = "bad_mask"  # the organ mask file could not be decoded (organs segmented)
MASK_RESIZED: Final = "mask_resized"  # the mask file's size differed from its image's
NONFINITE_HEATMAP: Final = "nonfinite_heatmap"  # the gaze heatmap had NaN/inf pixels (set 0)
EMPTY_ORGANS: Final = "empty_organs"  # the organ map has no region pixel
ORGANS_RULE_BASED: Final = "organs_rule_based"  # organs came from rule-based segmentation
VALID_FRACTION: Final = "valid_fraction"  # float: share of patches overlapping the region
FILLED_SHARE: Final = "filled_share"  # float: share of masked patches filled from outside it
CROP_FALLBACK: Final = "crop_fallback"  # the lung crop used the whole image (no/too small box)
COUNT_COLUMNS: Final = (BAD_IMAGE, BAD_MASK, MASK_RESIZED, ORGANS_RULE_BASED, EMPTY_ORGANS,
                        NONFINITE_HEATMAP)

SAMPLE_COLUMNS: Final = (ID, IMAGE, ORGANS, LESION, GAZE, LABEL, LABELS, SPLIT, SOURCE)

SPLITS: Final = ("train", "val", "test")
POOL: Final = "pool"  # the unlabelled pretraining split of a study (labels never read)

# --- organ label map ---------------------------------------------------------------------
ORGAN_BACKGROUND: Final = 0
ORGAN_RIGHT_LUNG: Final = 1  # the patient's right lung: the image's LEFT side on a PA view
ORGAN_LEFT_LUNG: Final = 2
ORGAN_HEART: Final = 3
ORGAN_NAMES: Final = {
    ORGAN_BACKGROUND: "background",
    ORGAN_RIGHT_LUNG: "right_lung",
    ORGAN_LEFT_LUNG: "left_lung",
    ORGAN_HEART: "heart",
}
LUNG_LABELS: Final = (ORGAN_RIGHT_LUNG, ORGAN_LEFT_LUNG)

# --- class vocabularies --------------------------------------------------------------------
# The four classes of the COVID-19 Radiography Database, in folder-name spelling.
COVID_CLASSES: Final = ("Normal", "COVID", "Lung_Opacity", "Viral Pneumonia")
# The phantom's multi-label findings.
PHANTOM_FINDINGS: Final = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)
