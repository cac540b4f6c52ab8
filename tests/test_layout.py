"""RunLayout (every path and name of a run) and parse (its single inverse)."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from faust_hpc import layout
from faust_hpc.errors import UserInputError
from faust_hpc.layout import RunLayout, parse

PROD = Path("/scratch/prod")


def test_directories_of_a_run():
    run = RunLayout(PROD)
    assert run.images_dir == PROD / "images" and run.field_image_dir("CB68") == PROD / "images" / "CB68"
    assert run.field_moment_dir("CB68") == PROD / "moments" / "CB68"
    assert run.plots_dir == PROD / "plots" and run.report_dir == PROD / "report"
    assert run.job_logs_dir == PROD / "logs" / "jobs"
    assert run.unit_workdir("CB68/244.936GHz_CS/joint/0.5/chunk07") == PROD / "work" / "CB68__244.936GHz_CS__joint__0.5__chunk07"
    assert run.unit_log("CB68/244.936GHz_CS/joint/0.5/qa", 2) == \
        PROD / "logs" / "CB68__244.936GHz_CS__joint__0.5__qa.attempt2.casa.log"
    assert run.manifest_path == PROD / ".faust-hpc" / "manifest.jsonl"


def test_image_names_follow_the_documented_convention():
    run = RunLayout(PROD)
    d = PROD / "images" / "CB68"
    assert run.image_base("CB68", "244.936GHz_CS", "joint", "0.5") == d / "CB68_244.936GHz_CS_joint_0.5"
    assert run.image_base("CB68", "244.936GHz_CS", "joint", "0.5", ext="clean", chunk=3) == \
        d / "CB68_244.936GHz_CS_chunk3_joint_0.5_clean"
    assert run.image_base("CB68", "244.936GHz_CS", "12m", "natural", ext=["5kms", "clean"]) == \
        d / "CB68_244.936GHz_CS_12m_natural_5kms_clean"
    assert run.tiny_stamp_base("CB68", "244.936GHz_CS", "joint", "0.5") == d / "CB68_244.936GHz_CS_joint_0.5_tinyimg"
    assert run.chunk_list("CB68", "244.936GHz_CS", "joint", "0.5", "clean") == \
        d / "CB68_244.936GHz_CS_joint_0.5_clean.chunks.json"
    assert run.final_fits("CB68", "244.936GHz_CS", "joint", "0.5", "clean") == \
        d / "CB68_244.936GHz_CS_joint_0.5_clean.image.pbcor.common.fits"
    assert run.moment_map("CB68_244.936GHz_CS_joint_0.5_clean", "mom0.pbcor", "CB68") == \
        PROD / "moments" / "CB68" / "CB68_244.936GHz_CS_joint_0.5_clean.mom0.pbcor.fits"
    assert run.qa_plot("CB68_244.936GHz_CS_joint_0.5_clean", "residual", "pdf") == \
        PROD / "plots" / "CB68_244.936GHz_CS_joint_0.5_clean_qa_plot_residual.pdf"


def test_parse_inverts_every_image_name():
    """Labels contain dots and may be re-targeted (216.582GHz_CH3CHO is not in the
    catalog); fields contain underscores; weightings may be negative."""
    run = RunLayout(PROD)
    for field, label, array, weighting, chunk, ext, image_ext in itertools.product(
            ("CB68", "IRAS_15398-3359", "L1551_IRS5"), ("244.936GHz_CS", "217.822GHz_c-C3H2", "216.582GHz_CH3CHO"),
            ("joint", "12m", "7m"), ("natural", "0.5", "-2.0", "-2"), (None, 0, 12),
            (None, "clean", "dirty", "tinyimg", "5kms_clean"),
            (None, "image", "image.common", "image.pbcor.common.fits", "mask", "sumwt")):
        base = run.image_base(field, label, array, weighting, ext=ext, chunk=chunk)
        path = f"{base}.{image_ext}" if image_ext else str(base)
        name = parse(path)
        assert (name.field, name.label, name.array, name.weighting, name.chunk, name.ext, name.image_ext) == \
            (field, label, array, weighting, chunk, ext, image_ext), path
        assert name.stem == str(base) and name.base == base.name
        assert name.is_chunk == (chunk is not None)


def test_parse_of_other_names():
    name = parse("/x/images/CB68/CB68_244.936GHz_CS_joint_0.5_clean.image.pbcor.common.fits")
    assert name.mol_name == "CS" and layout.product_dir_of(f"{name.stem}.image") == Path("/x")
    # a field the catalog does not know: nothing is guessed, the chunk is still seen
    unknown = parse("/x/images/Foo/Foo_244.936GHz_CS_chunk2_joint_0.5_clean.image")
    assert (unknown.field, unknown.label, unknown.chunk) == (None, None, 2)
    assert layout.product_dir_of("/x/elsewhere/a.image") is None
    with pytest.raises(UserInputError, match="not a CASA product name"):
        parse("/x/images/CB68/CB68_244.936GHz_CS_joint_0.5_clean.txt", require_image_ext=True)
    assert layout.split_image_ext("a_0.5_clean.image.common") == ("a_0.5_clean", "image.common")


def test_one_tuple_of_final_products():
    """The finalize unit's outputs and the concatenated extensions are one tuple."""
    from faust_hpc import execute

    assert execute.FINAL_PRODUCT_EXTS is layout.FINAL_PRODUCT_EXTS
    assert execute.CHUNK_PRODUCT_EXTS is layout.CHUNK_PRODUCT_EXTS
