"""The original pipeline's module-level API as the cookbook uses it (issue 10 §2):
assignable globals, ``import *``, console logging and safe clean-up. No CASA."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import faust_hpc.imaging as imaging
from faust_hpc import user_paths
from faust_hpc.errors import UserInputError

DOC = Path(__file__).resolve().parents[2] / "shared" / "seed" / "faust_pipeline_documentation.txt"


@pytest.fixture(autouse=True)
def fresh_globals():
    user_paths.reset()
    yield
    user_paths.reset()


def test_assigned_directory_globals_take_effect(tmp_path):
    """As in the original: assign PROD_DIR / DATA_DIR / MOMA_DIR / PLOT_DIR on the
    module, and what is created or written afterwards follows them."""
    from faust_hpc.products.moments import moment_paths
    from faust_hpc.products.qa import qa_plot_paths

    imaging.PROD_DIR = tmp_path / "prod"
    imaging.DATA_DIR = tmp_path / "data"
    assert imaging.IMAG_DIR == tmp_path / "prod" / "images" and imaging.paths.PROD_DIR == tmp_path / "prod"
    config = imaging.ImageConfig.from_name("CB68", "244.936GHz_CS")
    assert config.get_imagebase("clean") == str(tmp_path / "prod" / "images" / "CB68" /
                                                "CB68_244.936GHz_CS_joint_0.5_clean")
    assert config.dset.ms_dir == tmp_path / "data" / "CB68-Setup2"
    image = f"{config.get_imagebase('clean')}.image"
    imaging.MOMA_DIR = tmp_path / "my_moments"
    imaging.PLOT_DIR = tmp_path / "my_plots"
    assert moment_paths(image)["mom0.pbcor"].parent == tmp_path / "my_moments" / "CB68"
    assert qa_plot_paths(image)["image"][0].parent == tmp_path / "my_plots"
    imaging.set_paths(prod_dir=tmp_path / "other")          # documented: the folders follow PROD_DIR again
    assert imaging.PLOT_DIR == tmp_path / "other" / "plots"


def test_assigned_extension_globals_take_effect(tmp_path):
    """DIRTY_EXT / NOMSK_EXT / TINYIMG_EXT are read when a name is needed."""
    config = imaging.ImageConfig.from_name("CB68", "244.936GHz_CS", prod_dir=tmp_path, data_dir=tmp_path)
    assert config.dirty_imagebase.endswith("_dirty") and config.nomask_imagebase.endswith("_nomask")
    imaging.DIRTY_EXT, imaging.NOMSK_EXT, imaging.TINYIMG_EXT = "dirty2", "nomask2", "stamp"
    assert config.dirty_imagebase.endswith("_0.5_dirty2")
    assert config.nomask_imagebase.endswith("_0.5_nomask2") and imaging.NOMASK_EXT == "nomask2"
    assert config.tinyimg_imagebase.endswith("_0.5_stamp")


def _documented_module_names() -> set[str]:
    """Every function and class of the API chapter, plus the documented globals."""
    text = DOC.read_text(encoding="utf-8")
    api = text[text.index("faust_imaging module"):]
    names = set(re.findall(r"^(?:class )?([A-Za-z_]\w*)\(", api, flags=re.M))
    methods = set()
    for cls in ("Target", "DataSet", "Spw", "ImageManager", "ChunkConfig", "ImageConfig", "ChunkedConfigSet",
                "MomentMapper", "CubeSet"):
        methods |= {n for n in names if hasattr(getattr(imaging, cls, None), n)}
    return (names - methods) | {"ALL_FIELD_NAMES", "ALL_TARGET_NAMES", "ALL_SPW_LABELS", "ALL_TARGETS", "PROD_DIR",
                                "DATA_DIR", "IMAG_DIR", "MOMA_DIR", "PLOT_DIR", "DIRTY_EXT", "NOMSK_EXT",
                                "TINYIMG_EXT"}


# One-off developer helpers of the original (SPW metadata dumps, a rest-frequency
# fix of 2021's archive cubes, a perchanweightdensity experiment): not carried over.
NOT_CARRIED_OVER = {"parse_spw_info_from_ms", "write_all_spw_info", "test_perchanwt", "test_rename_oldfiles"}
# Not module names: the CASA command of the chapter's introduction, and a
# MomentMapper method (listed at the start of a line like the functions).
NOT_MODULE_NAMES = {"execfile", "get_top_right_corner_pixels"}


def test_star_import_gives_every_documented_name():
    namespace: dict = {}
    exec("from faust_hpc.imaging import *", namespace)
    documented = _documented_module_names()
    assert {"MomentMapper", "make_all_moment_maps", "make_qa_plots_from_image", "CubeSet", "log_post",
            "ImageConfig", "make_all_line_dirty_cubes", "savefig"} <= documented
    missing = sorted(documented - NOT_CARRIED_OVER - NOT_MODULE_NAMES - set(namespace))
    assert not missing, f"documented but not exported: {missing}"


def test_log_post_reaches_the_console_in_interactive_use(tmp_path):
    code = ("from faust_hpc.imaging import log_post\n"
            "log_post('-- hello from the pipeline')\nlog_post('!! a warning', 'WARN')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "-- hello from the pipeline" in res.stderr and "!! a warning" in res.stderr
    assert res.stdout == ""          # the script's own output stays its own


def _products(tmp_path: Path):
    config = imaging.ImageConfig.from_name("CB68", "244.936GHz_CS", prod_dir=tmp_path / "prod",
                                           data_dir=tmp_path / "data")
    base = config.get_imagebase()
    files = [Path(f"{base}_clean.image"), Path(f"{base}_dirty.image")]
    for f in files:
        f.mkdir(parents=True)
    return config, files


def test_remove_all_files_without_a_terminal_refuses_unless_told(tmp_path, monkeypatch):
    config, files = _products(tmp_path)
    monkeypatch.setattr("sys.stdin", None)
    with pytest.raises(UserInputError, match="confirm=False") as err:
        config.remove_all_files()
    assert "\n" not in str(err.value) and all(f.exists() for f in files)
    assert sorted(config.remove_all_files(confirm=False)) == sorted(map(str, files))
    assert not any(f.exists() for f in files)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_remove_all_files_on_a_terminal_prompts(tmp_path):
    """On a terminal the files are listed and only a typed ``y`` deletes them."""
    config, files = _products(tmp_path)
    code = ("import sys\nfrom faust_hpc.imaging import ImageConfig\n"
            f"c = ImageConfig.from_name('CB68', '244.936GHz_CS', prod_dir={str(tmp_path / 'prod')!r}, "
            f"data_dir={str(tmp_path / 'data')!r})\n"
            "print('removed', len(c.remove_all_files()))\n")

    def answer(reply: str) -> str:
        master, slave = os.openpty()
        try:
            proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave)
            os.write(master, reply.encode() + b"\n")
            proc.wait(timeout=120)
            os.close(slave)
            out = b""
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            return out.decode(errors="replace")
        finally:
            os.close(master)

    out = answer("n")
    assert "Delete the above files?" in out and files[0].name in out and "removed 0" in out
    assert all(f.exists() for f in files)
    out = answer("y")
    assert "removed 2" in out and not any(f.exists() for f in files)
