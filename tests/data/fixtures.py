"""Tiny fixtures written in each real dataset's exact published layout (file names, folder
structure, CSV/XLSX column names), with a few small PNG/JPG images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from medmask.data.chexmask import rle_encode


def write_png(path: Path, shape: tuple[int, int], value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full(shape, value, np.uint8)
    image[: shape[0] // 2] = 255 - value  # not constant
    assert cv2.imwrite(str(path), image)
    return path


def write_jpg(path: Path, shape: tuple[int, int], value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full(shape, value, np.uint8)
    image[:, : shape[1] // 2] = 200
    assert cv2.imwrite(str(path), image)
    return path


# --- COVID-19 Radiography Database -------------------------------------------------------

COVID_FOLDERS = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")


def write_covid_radiography(root: Path, per_class: int = 3, image_size: int = 12,
                            mask_size: int = 10) -> Path:
    """``COVID-19_Radiography_Dataset/<Class>/{images,masks}/<Class>-<i>.png`` + xlsx sheets.

    Real sizes are 299 (images) and 256 (masks); the fixture keeps the mismatch, smaller.
    """
    base = root / "COVID-19_Radiography_Dataset"
    for name in COVID_FOLDERS:
        for i in range(1, per_class + 1):
            write_png(base / name / "images" / f"{name}-{i}.png", (image_size, image_size))
            mask = np.zeros((mask_size, mask_size), np.uint8)
            mask[2:8, 1:4] = 255
            mask[2:8, 6:9] = 255
            (base / name / "masks").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(base / name / "masks" / f"{name}-{i}.png"), mask)
        stem = "NORMAL" if name == "Normal" else name  # Normal's workbook names are upper-case
        pd.DataFrame({
            "FILE NAME": [f"{stem}-{i}" for i in range(1, per_class + 1)],
            "FORMAT": ["PNG"] * per_class,
            "SIZE": ["256*256"] * per_class,
            "URL": [f"https://example.org/{name}/{i}" for i in range(1, per_class + 1)],
        }).to_excel(base / f"{name}.metadata.xlsx", index=False)
    return base


# --- CheXmask ----------------------------------------------------------------------------


def chexmask_masks(height: int, width: int) -> dict[str, np.ndarray]:
    right = np.zeros((height, width), bool)
    right[2:10, 1:6] = True
    left = np.zeros((height, width), bool)
    left[2:10, 9:14] = True
    heart = np.zeros((height, width), bool)
    heart[6:11, 4:10] = True  # overlaps both lungs
    return {"Right Lung": right, "Left Lung": left, "Heart": heart}


def write_chexmask(root: Path, ids: list[str], id_column: str, source: str,
                   dice: list[float], height: int = 12, width: int = 16,
                   gz: bool = False) -> Path:
    """``<root>/OriginalResolution/<source>.csv`` with the CheXmask columns."""
    masks = chexmask_masks(height, width)
    rows = []
    for image_id, score in zip(ids, dice, strict=True):
        rows.append({
            id_column: image_id,
            "Dice RCA (Mean)": score,
            "Dice RCA (Max)": min(1.0, score + 0.05),
            "Landmarks": "[[1, 2], [3, 4]]",
            "Left Lung": rle_encode(masks["Left Lung"]),
            "Right Lung": rle_encode(masks["Right Lung"]),
            "Heart": rle_encode(masks["Heart"]),
            "Height": height,
            "Width": width,
        })
    folder = root / "OriginalResolution"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{source}.csv.gz" if gz else f"{source}.csv")
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# --- MIMIC-CXR-JPG -----------------------------------------------------------------------

MIMIC_IMAGES = [  # (dicom_id, subject_id, study_id, ViewPosition, split)
    ("aaaa1111-0001", 10000032, 50414267, "PA", "train"),
    ("aaaa1111-0002", 10000032, 50414267, "LATERAL", "train"),
    ("bbbb2222-0001", 10000764, 57375967, "AP", "validate"),
    ("cccc3333-0001", 11000011, 51029426, "PA", "test"),
    ("dddd4444-0001", 12000022, 53189527, "AP", "train"),
]
MIMIC_LABELS = {  # study_id -> {finding: value}; others blank
    50414267: {"Atelectasis": 1.0, "Cardiomegaly": -1.0, "No Finding": None},
    57375967: {"Edema": 0.0, "Pleural Effusion": 1.0},
    51029426: {"No Finding": 1.0},
    # 53189527 has no label row: counted as unlabeled
}
CHEXPERT_COLUMNS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
    "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
)


def mimic_image_path(root: Path, subject: int, study: int, dicom: str) -> Path:
    return root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"


def write_mimic_cxr(root: Path, skip_images: tuple[str, ...] = (), gz: bool = True,
                    shape: tuple[int, int] = (20, 16)) -> Path:
    """``mimic-cxr-2.0.0-{metadata,chexpert,split}.csv.gz`` + ``files/pNN/p<s>/s<t>/<d>.jpg``."""
    root.mkdir(parents=True, exist_ok=True)
    ext = ".csv.gz" if gz else ".csv"
    pd.DataFrame({
        "dicom_id": [r[0] for r in MIMIC_IMAGES],
        "subject_id": [r[1] for r in MIMIC_IMAGES],
        "study_id": [r[2] for r in MIMIC_IMAGES],
        "PerformedProcedureStepDescription": ["CHEST (PA AND LAT)"] * len(MIMIC_IMAGES),
        "ViewPosition": [r[3] for r in MIMIC_IMAGES],
        "Rows": [shape[0]] * len(MIMIC_IMAGES),
        "Columns": [shape[1]] * len(MIMIC_IMAGES),
        "StudyDate": [21800506] * len(MIMIC_IMAGES),
        "StudyTime": [213014.531] * len(MIMIC_IMAGES),
    }).to_csv(root / f"mimic-cxr-2.0.0-metadata{ext}", index=False)
    label_rows = []
    subjects = {r[2]: r[1] for r in MIMIC_IMAGES}
    for study, values in MIMIC_LABELS.items():
        row = {"subject_id": subjects[study], "study_id": study}
        row.update({c: values.get(c) for c in CHEXPERT_COLUMNS})
        label_rows.append(row)
    pd.DataFrame(label_rows, columns=["subject_id", "study_id", *CHEXPERT_COLUMNS]).to_csv(
        root / f"mimic-cxr-2.0.0-chexpert{ext}", index=False)
    pd.DataFrame({
        "dicom_id": [r[0] for r in MIMIC_IMAGES],
        "study_id": [r[2] for r in MIMIC_IMAGES],
        "subject_id": [r[1] for r in MIMIC_IMAGES],
        "split": [r[4] for r in MIMIC_IMAGES],
    }).to_csv(root / f"mimic-cxr-2.0.0-split{ext}", index=False)
    for dicom, subject, study, _, _ in MIMIC_IMAGES:
        if dicom not in skip_images:
            write_jpg(mimic_image_path(root, subject, study, dicom), shape)
    return root


# --- NIH ChestX-ray14 --------------------------------------------------------------------

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
              "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")


def nih_rows(n_patients: int = 12, per_patient: int = 2, seed: int = 0) -> list[tuple]:
    """(image index, finding labels, follow-up, patient id, view) rows."""
    rng = np.random.default_rng(seed)
    findings = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                "Pneumothorax", "Hernia"]
    rows = []
    for patient in range(1, n_patients + 1):
        for follow in range(per_patient):
            k = int(rng.integers(0, 3))
            labels = "|".join(sorted(rng.choice(findings, k, replace=False))) or "No Finding"
            rows.append((f"{patient:08d}_{follow:03d}.png", labels, follow, patient,
                         "PA" if follow % 2 == 0 else "AP"))
    return rows


def write_nih_cxr14(root: Path, rows: list[tuple] | None = None, test_patients: int = 3,
                    skip_images: tuple[str, ...] = (), folders: int = 2) -> Path:
    """``Data_Entry_2017.csv`` (original header, trailing comma), the two lists and
    ``images_0NN/images/*.png``."""
    rows = rows if rows is not None else nih_rows()
    root.mkdir(parents=True, exist_ok=True)
    lines = [NIH_HEADER]
    for name, labels, follow, patient, view in rows:
        lines.append(f"{name},{labels},{follow},{patient},58,M,{view},2682,2749,0.143,0.143,")
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    test_ids = {r[3] for r in rows[-test_patients * 2:]}
    test = [r[0] for r in rows if r[3] in test_ids]
    train_val = [r[0] for r in rows if r[3] not in test_ids]
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    for i, row in enumerate(rows):
        if row[0] not in skip_images:
            write_png(root / f"images_{1 + i % folders:03d}" / "images" / row[0], (8, 8))
    return root


# --- EYEGAZE (egd-cxr) -------------------------------------------------------------------

EYEGAZE_IMAGES = [  # (dicom_id, subject, study, class)
    ("1a2b3c4d-11111111-22222222-33333333-44444444", 15628804, 58573295, "CHF"),
    ("5e6f7a8b-55555555-66666666-77777777-88888888", 17000001, 51111111, "Normal"),
    ("9c0d1e2f-99999999-aaaaaaaa-bbbbbbbb-cccccccc", 18000002, 52222222, "pneumonia"),
]
EYEGAZE_SHAPE = (60, 80)  # (H, W) of the fixture's "original" images


def write_eyegaze(root: Path, image_root: Path) -> dict[str, list]:
    """``master_sheet.csv``, ``fixations.csv``, ``bounding_boxes.csv`` + MIMIC-CXR-JPG images.

    Returns the fixations written per image (x, y lists) for the tests.
    """
    root.mkdir(parents=True, exist_ok=True)
    sheet = []
    for dicom, subject, study, cls in EYEGAZE_IMAGES:
        sheet.append({
            "dicom_id": dicom,
            "path": f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom}.dcm",
            "study_id": study, "patient_id": subject, "stay_id": 30000000, "gender": "F",
            "anchor_age": 50, "image_top_pad": 0, "image_bottom_pad": 0,
            "image_left_pad": 120, "image_right_pad": 120,
            "Normal": int(cls == "Normal"), "CHF": int(cls == "CHF"),
            "pneumonia": int(cls == "pneumonia"), "consolidation": 0,
            "enlarged_cardiac_silhouette": int(cls == "CHF"),
        })
        write_jpg(image_root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
                  / f"{dicom}.jpg", EYEGAZE_SHAPE)
    pd.DataFrame(sheet).to_csv(root / "master_sheet.csv", index=False)
    fixations = {
        EYEGAZE_IMAGES[0][0]: ([10, 40, 40, -1, 79], [5, 30, 30, -1, 59]),
        EYEGAZE_IMAGES[1][0]: ([20, 200], [20, 10]),  # 200 is outside the 80-px-wide image
        EYEGAZE_IMAGES[2][0]: ([], []),
    }
    rows = []
    for dicom, (xs, ys) in fixations.items():
        for t, (x, y) in enumerate(zip(xs, ys, strict=True)):
            rows.append({"SESSION_ID": 1, "MEDIA_ID": 0, "CNT": t, "Time (in secs)": 0.1 * t,
                         "DICOM_ID": dicom, "TIMESTAMP": t, "FPOGX": 0.5, "FPOGY": 0.5,
                         "FPOGS": 0.0, "FPOGD": 0.2, "FPOGID": t, "FPOGV": 1,
                         "X_ORIGINAL": x, "Y_ORIGINAL": y})
    pd.DataFrame(rows).to_csv(root / "fixations.csv", index=False)
    pd.DataFrame([
        {"dicom_id": EYEGAZE_IMAGES[0][0], "bbox_name": "right lung", "x1": 5, "x2": 30,
         "y1": 10, "y2": 50},
        {"dicom_id": EYEGAZE_IMAGES[0][0], "bbox_name": "left lung", "x1": 50, "x2": 75,
         "y1": 10, "y2": 50},
        {"dicom_id": EYEGAZE_IMAGES[0][0], "bbox_name": "cardiac silhouette", "x1": 25,
         "x2": 55, "y1": 30, "y2": 55},
        {"dicom_id": EYEGAZE_IMAGES[1][0], "bbox_name": "right lung", "x1": 0, "x2": 10,
         "y1": 0, "y2": 10},
    ]).to_csv(root / "bounding_boxes.csv", index=False)
    return fixations


# --- generic folder / CSV ----------------------------------------------------------------


def write_class_folders(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        for i in range(n):
            write_png(root / name / f"{name}_{i}.png", (6, 6))
    return root


# --- LGG FLAIR segmentation (Kaggle lgg-mri-segmentation) ---------------------------------

LGG_CASES = ("TCGA_CS_4941_19960909", "TCGA_CS_4941_19970215", "TCGA_DU_5849_19950405",
             "TCGA_HT_7879_19981009")


def lgg_image(case_index: int, n: int, size: int = 16) -> np.ndarray:
    """The RGB slice (pre-contrast, FLAIR, post-contrast); FLAIR varies, the others constant."""
    flair = (np.arange(size * size).reshape(size, size) * (case_index + n) % 251).astype(np.uint8)
    return np.stack([np.full((size, size), 10, np.uint8), flair,
                     np.full((size, size), 200, np.uint8)], -1)


def write_lgg(root: Path, cases: tuple[str, ...] = LGG_CASES, slices: int = 4,
              empty: tuple[int, ...] = (1, 4), size: int = 16) -> Path:
    """``kaggle_3m/<case>/<case>_<n>.tif`` (3-channel) + ``<case>_<n>_mask.tif`` (0/255).

    Slices ``n in empty`` get an all-zero mask (the AHM paper removes them); ``data.csv`` and
    ``README.md`` sit beside the cases as in the Kaggle archive.
    """
    base = root / "kaggle_3m"
    for k, case in enumerate(cases):
        folder = base / case
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(1, slices + 1):
            rgb = lgg_image(k, n, size)
            assert cv2.imwrite(str(folder / f"{case}_{n}.tif"), rgb[..., ::-1])  # OpenCV: BGR
            mask = np.zeros((size, size), np.uint8)
            if n not in empty:
                mask[4:4 + n + 2, 5:11] = 255
            assert cv2.imwrite(str(folder / f"{case}_{n}_mask.tif"), mask)
    pd.DataFrame({"Patient": sorted({c[:12] for c in cases}), "RNASeqCluster": 2}).to_csv(
        base / "data.csv", index=False)
    (base / "README.md").write_text("LGG segmentation dataset\n")
    return base


# --- Medical Segmentation Decathlon (NIfTI) ----------------------------------------------


def write_decathlon(root: Path, cases: tuple[str, ...] = ("BRATS_001", "BRATS_002", "BRATS_003"),
                    shape: tuple[int, int, int] = (12, 10, 6), modalities: int = 2,
                    empty: tuple[int, ...] = (0, 5), dataset_json: bool = True) -> Path:
    """``imagesTr/<case>.nii.gz`` (4-D when ``modalities`` > 1), ``labelsTr/<case>.nii.gz``
    (labels 0..3; slices ``empty`` without target), ``dataset.json`` and a ``._`` fork file."""
    import json

    import nibabel as nib

    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    affine = np.eye(4)
    for k, case in enumerate(cases):
        image = rng.normal(100 + 10 * k, 20, (*shape, modalities)).astype(np.float32)
        image[..., 0] += np.arange(shape[2], dtype=np.float32) * 5  # slice-dependent FLAIR
        if modalities == 1:
            image = image[..., 0]
        labels = np.zeros(shape, np.uint8)
        for z in range(shape[2]):
            if z not in empty:
                labels[2:6, 3:7, z] = 1 + z % 3
        nib.Nifti1Image(image, affine).to_filename(str(root / "imagesTr" / f"{case}.nii.gz"))
        nib.Nifti1Image(labels, affine).to_filename(str(root / "labelsTr" / f"{case}.nii.gz"))
    (root / "imagesTr" / f"._{cases[0]}.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS fork")
    if dataset_json:
        (root / "dataset.json").write_text(json.dumps({
            "name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w"},
            "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor",
                       "3": "enhancing tumour"},
            "numTraining": len(cases),
            "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                         for c in cases],
            "test": [],
        }))
    return root


# --- MIMIC-CXR-JPG + CheXmask cohort (the contour-overlay protocol) ----------------------

OFFICIAL_SPLITS = ("train", "train", "validate", "test")  # patient i -> OFFICIAL_SPLITS[i % 4]


def write_mimic_cohort(root: Path, chexmask_root: Path, n_patients: int = 16, seed: int = 0,
                       shape: tuple[int, int] = (24, 20)) -> dict[str, pd.DataFrame]:
    """A MIMIC-CXR-JPG root (metadata, CheXpert labels with 1 / 0 / -1 / blank, official
    split, JPGs under ``files/``) and a CheXmask ``OriginalResolution/MIMIC-CXR-JPG.csv`` for
    its frontal images: each patient has two studies, each a frontal (PA or AP) and a lateral
    image; one frontal image has no CheXmask row and one a low ``Dice RCA (Mean)``. Returns
    the ``images``, ``labels`` and ``masks`` tables written."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for p in range(n_patients):
        subject = 10000000 + 1013 * p
        for s in range(2):
            study = 50000000 + 100 * p + s
            for view in (("PA", "AP")[(p + s) % 2], "LATERAL"):
                images.append({"dicom_id": f"d{p:03d}-{s}-{view.lower()}", "subject_id": subject,
                               "study_id": study, "ViewPosition": view,
                               "split": OFFICIAL_SPLITS[p % 4]})
            values = rng.choice([1.0, 0.0, -1.0, np.nan], size=len(CHEXPERT_COLUMNS),
                                p=[0.3, 0.3, 0.15, 0.25])
            labels.append({"subject_id": subject, "study_id": study,
                           **dict(zip(CHEXPERT_COLUMNS, values, strict=True))})
    images_df, labels_df = pd.DataFrame(images), pd.DataFrame(labels)
    root.mkdir(parents=True, exist_ok=True)
    meta = images_df.drop(columns="split").assign(Rows=shape[0], Columns=shape[1])
    meta.to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    labels_df.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    images_df[["dicom_id", "study_id", "subject_id", "split"]].to_csv(
        root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    for row in images:
        path = mimic_image_path(root, row["subject_id"], row["study_id"], row["dicom_id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        ramp = np.linspace(20, 235, shape[0] * shape[1]).reshape(shape)
        assert cv2.imwrite(str(path), ramp.astype(np.uint8))
    frontal = [r["dicom_id"] for r in images if r["ViewPosition"] != "LATERAL"]
    listed = frontal[1:]  # the first frontal image has no CheXmask row
    dice = [0.5 if i == 0 else 0.9 for i in range(len(listed))]  # one of low quality
    write_chexmask(chexmask_root, listed, "dicom_id", "MIMIC-CXR-JPG", dice, *shape)
    masks = pd.DataFrame({"dicom_id": listed, "dice": dice})
    return {"images": images_df, "labels": labels_df, "masks": masks}
