import gzip

import numpy as np
import pytest

from medmask import columns as C
from medmask.columns import BAD_IMAGE
from medmask.data.imageio import ImageReadError
from medmask.data.manifest import load_manifest
from medmask.data.nifti import load_nifti_volumes
from medmask.data.slices import DecodeSlices, read_volume_slices
from tests.data.fixtures import write_decathlon


def test_rows_per_volume_slice_empty_slices_counted(tmp_path):
    root = write_decathlon(tmp_path / "Task01_BrainTumour")  # 3 volumes x 6 slices, 2 empty
    df = load_manifest("nifti_volumes", root)
    assert len(df) == 12 and df.attrs["slices_total"] == 18 and df.attrs["volumes"] == 3
    assert df.attrs["dropped"] == {"no_target": 6} and df.attrs["ignored_files"] == 1
    assert df.attrs["decathlon_modality"] == {"0": "FLAIR", "1": "T1w"}
    assert df[df[C.PATIENT] == "BRATS_002"][C.SLICE_INDEX].tolist() == [1, 2, 3, 4]
    row = df[df[C.ID] == "BRATS_001_z003"].iloc[0]
    assert row[C.PATH].endswith("imagesTr/BRATS_001.nii.gz") and row[C.IMAGE_CHANNEL] == 0
    assert row[C.LESION_PATH].endswith("labelsTr/BRATS_001.nii.gz")
    # only label 3 is target: slices z with 1 + z % 3 == 3 -> z in {2}
    only3 = load_nifti_volumes(root, target_labels=[3])
    assert only3[C.SLICE_INDEX].unique().tolist() == [2]
    assert only3.attrs["dropped"] == {"no_target": 15}
    everything = load_nifti_volumes(root, drop_empty=False, use_dataset_json=False)
    assert len(everything) == 18 and everything.attrs["dropped"] == {}


def test_3d_images_and_missing_labels(tmp_path):
    root = write_decathlon(tmp_path, modalities=1, dataset_json=False)
    (root / "labelsTr" / "BRATS_003.nii.gz").unlink()
    df = load_nifti_volumes(root)
    assert df.attrs["dropped"] == {"missing_label": 1, "no_target": 4} and len(df) == 8
    assert (df[C.IMAGE_CHANNEL] == -1).all()
    with pytest.raises(FileNotFoundError, match="BRATS_003"):
        load_nifti_volumes(root, on_missing="raise")


def test_bad_files_are_named(tmp_path):
    root = write_decathlon(tmp_path)
    label = root / "labelsTr" / "BRATS_002.nii.gz"
    label.write_bytes(gzip.compress(b"garbage" * 10))
    with pytest.raises(ImageReadError, match="BRATS_002.nii.gz"):
        load_nifti_volumes(root)
    write_decathlon(tmp_path, shape=(12, 10, 6))
    import nibabel as nib
    nib.Nifti1Image(np.zeros((12, 9, 6), np.uint8), np.eye(4)).to_filename(str(label))
    with pytest.raises(ValueError, match=r"BRATS_002.nii.gz has shape \(12, 9, 6\)"):
        load_nifti_volumes(root)
    with pytest.raises(ValueError, match="2 modalities"):
        write_decathlon(tmp_path)
        load_nifti_volumes(root, channel=2)
    import shutil
    shutil.rmtree(root / "labelsTr")
    with pytest.raises(FileNotFoundError, match="labelsTr"):
        load_nifti_volumes(root)


def test_decode_stage_reads_slices_of_the_volume(tmp_path):
    import nibabel as nib

    root = write_decathlon(tmp_path)
    df = load_nifti_volumes(root)
    batch = {k: df[k].to_numpy() for k in df.columns}
    out = DecodeSlices.from_manifest(df, size=12)(batch)
    assert out[C.IMAGE].shape == (12, 12, 12) and out[C.LESION].dtype == np.uint8
    volume = np.asarray(nib.load(str(root / "imagesTr" / "BRATS_003.nii.gz")).dataobj)
    labels = np.asarray(nib.load(str(root / "labelsTr" / "BRATS_003.nii.gz")).dataobj)
    i = int(np.flatnonzero(df[C.ID] == "BRATS_003_z004")[0])
    flair = volume[:, :, 4, 0]  # 12 x 10 -> 12 x 12
    import cv2
    resized = cv2.resize(flair, (12, 12), interpolation=cv2.INTER_AREA)
    z = np.clip((resized - resized.mean()) / resized.std(), -3, 3)
    np.testing.assert_allclose(out[C.IMAGE][i], (z + 3) / 6, atol=1e-5)
    lesion = cv2.resize((labels[:, :, 4] > 0).astype(np.uint8), (12, 12),
                        interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(out[C.LESION][i], lesion)
    assert out[C.LESION].reshape(12, -1).any(1).all()  # every kept slice has target
    np.testing.assert_array_equal(read_volume_slices(root / "labelsTr" / "BRATS_003.nii.gz",
                                                     [4, 1])[0], labels[:, :, 4])


def test_decode_stage_names_a_truncated_volume_or_flags_it(tmp_path):
    root = write_decathlon(tmp_path)
    df = load_nifti_volumes(root)
    image = root / "imagesTr" / "BRATS_001.nii.gz"
    image.write_bytes(image.read_bytes()[:200])
    batch = {k: df[k].to_numpy() for k in df.columns}
    with pytest.raises(ImageReadError, match="BRATS_001.nii.gz"):
        DecodeSlices(8)(batch)
    out = DecodeSlices(8, on_bad_image="flag")(batch)
    assert out[BAD_IMAGE].tolist() == [True] * 4 + [False] * 8
