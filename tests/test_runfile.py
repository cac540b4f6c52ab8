"""Run-file validation: every error kind is one line naming the key, raised
before any work, and nothing is written."""
from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from faust_hpc.errors import RunFileError, UserInputError
from faust_hpc.runfile import RunSpec, SpwOverrides, load_runfile


FULL = """
[run]
name = "CB68-setup1"
data_dir = "data"
product_dir = "products/setup1"

[imaging]
fields = ["CB68"]
setup = 1
spws = "all"
weightings = [0.5, "natural"]
arrays = ["joint", "12m"]
fullcube = false
line_vwin = "20km/s"
ext = "clean"
nchunks = "default"
oversample = 10
cell_arcsec = 0.1
imsize = 256
nomask_sigma = 4.5
seedmask_sigma = 5.0
clean_sigma = 3.0
preserve_all_intermediate_products = false

[spw."233.796GHz_cont"]
nchunks = 8
rms = 0.002
gain = 0.03
cyclefactor = 2.5
scales = [0, 15, 45]
mask_ang_scales = [0, 1, 3]
smallscalebias = -1.0
uvtaper = ["1100klambda"]
automask = { lownoisethreshold = 2.0 }
moments_vwin_kms = 5.0

[scheduler]
retries = 2
unit_timeout_s = 0
node_memory_gb = 0
workers = 16
threads_per_unit = 0
executor = "faust_hpc.execute:run_unit"
"""

MINIMAL = """
[run]
data_dir = "data"
product_dir = "products"
[imaging]
fields = ["CB68"]
setup = {setup}
"""


def write(tmp_path: Path, text: str, name: str = "setup1.toml", data: tuple[str, ...] = ("CB68-Setup1",)) -> Path:
    for sub in data:
        (tmp_path / "data" / sub).mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, check_paths: bool = True) -> str:
    with pytest.raises(RunFileError) as err:
        load_runfile(path, check_paths=check_paths)
    message = str(err.value)
    assert "\n" not in message, message
    assert message.startswith(path.name + ":"), message
    assert isinstance(err.value, UserInputError)
    return message


def minimal(setup: int = 1, extra: str = "") -> str:
    return MINIMAL.format(setup=setup) + extra


# --------------------------------------------------------------------------- valid files

def test_full_example_loads(tmp_path):
    path = write(tmp_path, FULL)
    spec = load_runfile(path)
    assert isinstance(spec, RunSpec)
    assert spec.path == path and spec.name == "CB68-setup1"
    assert spec.data_dir == tmp_path / "data"
    assert spec.product_dir == tmp_path / "products" / "setup1"
    assert spec.casa_data_dir is None
    assert spec.fields == ("CB68",) and spec.setup == 1
    assert len(spec.spw_labels) == 13 and "233.796GHz_cont" in spec.spw_labels
    assert spec.weightings == (0.5, "natural") and spec.arrays == ("joint", "12m")
    assert spec.fullcube is False and spec.line_vwin == "20km/s" and spec.ext == "clean"
    assert spec.nchunks == "default"
    assert (spec.geometry.oversample, spec.geometry.cell_arcsec, spec.geometry.imsize) == (10.0, 0.1, 256)
    assert (spec.thresholds.nomask_sigma, spec.thresholds.seedmask_sigma, spec.thresholds.clean_sigma) == (4.5, 5.0, 3.0)
    cont = spec.spw_overrides("233.796GHz_cont")
    assert cont.nchunks == 8 and cont.rms == 0.002 and cont.gain == 0.03 and cont.cyclefactor == 2.5
    assert cont.scales == (0, 15, 45) and cont.mask_ang_scales == (0.0, 1.0, 3.0)
    assert cont.uvtaper == ("1100klambda",) and cont.automask == {"lownoisethreshold": 2.0}
    assert cont.smallscalebias == -1.0 and cont.moments_vwin_kms == 5.0
    assert spec.spw_overrides("244.936GHz_CS") == SpwOverrides()  # another Setup: all defaults
    assert spec.nchunks_for("233.796GHz_cont") == 8 and spec.nchunks_for("216.113GHz_DCOp") == "default"
    s = spec.scheduler
    assert (s.retries, s.unit_timeout_s, s.node_memory_gb, s.workers, s.threads_per_unit) == (2, 0.0, 0.0, 16, 0)
    assert s.executor == "faust_hpc.execute:run_unit"
    keys = spec.image_keys()
    assert len(keys) == 13 * 2 * 2
    assert keys[0].path == "CB68/216.113GHz_DCOp/joint/0.5"
    assert keys[1].path == "CB68/216.113GHz_DCOp/joint/natural"
    assert keys == spec.image_keys()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.setup = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        cont.automask["noisethreshold"] = 1.0  # type: ignore[index]
    assert hash(spec) == hash(load_runfile(path))                       # hashable, deterministic
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_defaults_and_selections(tmp_path):
    spec = load_runfile(write(tmp_path, minimal(), name="demo.toml"))
    assert spec.name == "demo"                       # file stem
    assert spec.weightings == (0.5,) and spec.arrays == ("joint",) and spec.nchunks == "default"
    assert spec.fullcube is True and spec.ext == "clean"
    lines = load_runfile(write(tmp_path, minimal(extra='spws = "lines"\n')))
    assert len(lines.spw_labels) == 12 and "233.796GHz_cont" not in lines.spw_labels
    picked = load_runfile(write(tmp_path, minimal(extra='spws = ["218.222GHz_H2CO", "233.796GHz_cont"]\n'
                                                        'nchunks = "auto"\n')))
    assert picked.spw_labels == ("218.222GHz_H2CO", "233.796GHz_cont") and picked.nchunks == "auto"
    s3 = load_runfile(write(tmp_path, minimal(3), data=("CB68-Setup3",)))
    assert s3.arrays == ("12m",)                     # Setup 3 default: 12m only


def test_check_paths_false_plans_without_data(tmp_path):
    path = tmp_path / "nodata.toml"
    path.write_text(minimal())
    spec = load_runfile(path, check_paths=False)
    assert not spec.data_dir.exists()
    assert "does not exist" in error_of(path)


def test_loading_writes_nothing(tmp_path):
    path = write(tmp_path, FULL)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    load_runfile(path)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert before == after                          # no product dir, no probe file left


# --------------------------------------------------------------------------- one test per error kind

def test_unknown_spw_label_in_table(tmp_path):
    msg = error_of(write(tmp_path, minimal() + '[spw."244.936GHz_CSS"]\nrms = 0.1\n'))
    assert msg == 'setup1.toml: [spw."244.936GHz_CSS"] unknown SPW label; did you mean "244.936GHz_CS"?'


def test_spw_label_of_another_setup(tmp_path):
    msg = error_of(write(tmp_path, minimal() + '[spw."244.936GHz_CS"]\nrms = 0.1\n'))
    assert '[spw."244.936GHz_CS"]' in msg and "Setup 2" in msg and "Setup 1" in msg
    msg = error_of(write(tmp_path, minimal(extra='spws = ["93.176GHz_N2Hp"]\n')))
    assert "[imaging] spws:" in msg and "Setup 3" in msg


def test_unknown_spw_label_in_selection(tmp_path):
    msg = error_of(write(tmp_path, minimal(extra='spws = ["233.796GHz_cnt"]\n')))
    assert '[imaging] spws: unknown SPW label "233.796GHz_cnt"; did you mean "233.796GHz_cont"?' in msg


def test_unknown_key_with_suggestion_and_allowed(tmp_path):
    msg = error_of(write(tmp_path, minimal(extra="weighting = [0.5]\n")))
    assert msg.startswith('setup1.toml: [imaging] unknown key "weighting"; did you mean "weightings"? allowed: ')
    assert "fields" in msg and "nchunks" in msg
    msg = error_of(write(tmp_path, minimal() + '[spw."233.796GHz_cont"]\nrsm = 0.1\n'))
    assert '[spw."233.796GHz_cont"] unknown key "rsm"; did you mean "rms"?' in msg
    msg = error_of(write(tmp_path, minimal() + '[spw."233.796GHz_cont"]\nautomask = { lownoise = 2 }\n'))
    assert 'automask unknown auto-multithresh key "lownoise"' in msg
    msg = error_of(write(tmp_path, minimal() + "[schedular]\nretries = 1\n"))
    assert msg.startswith('setup1.toml: unknown table "schedular"; did you mean "scheduler"?')


@pytest.mark.parametrize("extra, needle", [
    ('setup = "1"', '[imaging] setup: expected the integer 1, 2 or 3, got string "1"'),
    ("weightings = 0.5", "[imaging] weightings: expected an array, got float 0.5"),
    ('fullcube = "yes"', '[imaging] fullcube: expected true or false, got string "yes"'),
    ("imsize = 256.5", "[imaging] imsize: expected an integer, got float 256.5"),
    ('nchunks = "lots"', '[imaging] nchunks: unknown value "lots"'),
    ("nchunks = 0", "[imaging] nchunks: must be >= 1, got 0"),
    ('weightings = ["natral"]', 'did you mean "natural"?'),
    ("weightings = [3.0]", "[imaging] weightings: must be <= 2.0, got 3.0"),
    ('line_vwin = "20 parsec"', "[imaging] line_vwin:"),
])
def test_wrong_types_and_values(tmp_path, extra, needle):
    text = minimal(extra=extra + "\n")
    if extra.startswith("setup"):
        text = text.replace("setup = 1\n", "")
    assert needle in error_of(write(tmp_path, text))


def test_wrong_types_in_spw_and_scheduler(tmp_path):
    msg = error_of(write(tmp_path, minimal() + '[spw."233.796GHz_cont"]\nscales = "0,15"\n'))
    assert '[spw."233.796GHz_cont"] scales: expected an array, got string "0,15"' in msg
    msg = error_of(write(tmp_path, minimal() + "[scheduler]\nretries = -1\n"))
    assert "[scheduler] retries: must be >= 0, got -1" in msg
    msg = error_of(write(tmp_path, minimal() + '[scheduler]\nexecutor = "not a path"\n'))
    assert "[scheduler] executor:" in msg


def test_unknown_field(tmp_path):
    msg = error_of(write(tmp_path, minimal().replace('["CB68"]', '["CB86"]')))
    assert msg == 'setup1.toml: [imaging] fields: unknown field "CB86"; did you mean "CB68"?'


@pytest.mark.parametrize("array", ["joint", "7m"])
def test_setup3_joint_or_7m_refused(tmp_path, array):
    msg = error_of(write(tmp_path, minimal(3, f'arrays = ["{array}"]\n'), data=("CB68-Setup3",)))
    assert "[imaging] arrays:" in msg and "Setup 3" in msg and '"12m"' in msg


def test_missing_required_keys(tmp_path):
    msg = error_of(write(tmp_path, minimal().replace('data_dir = "data"\n', "")))
    assert "[run] data_dir: missing" in msg
    msg = error_of(write(tmp_path, "[run]\ndata_dir = 'data'\nproduct_dir = 'p'\n"))
    assert "missing table [imaging]" in msg


def test_missing_or_unreadable_data_dir(tmp_path):
    path = write(tmp_path, minimal().replace('"data"', '"nowhere"'), data=())
    assert "[run] data_dir: directory" in error_of(path) and "does not exist" in error_of(path)
    (tmp_path / "afile").write_text("x")
    path = write(tmp_path, minimal().replace('data_dir = "data"', 'data_dir = "afile"'), data=())
    assert "is not a directory" in error_of(path)
    path = write(tmp_path, minimal(), data=("CB68-Setup2",))          # data, but not this field/Setup
    assert "no directory CB68-Setup1" in error_of(path)
    if os.geteuid() != 0:                                               # root reads anything
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0)
        try:
            path = write(tmp_path, minimal().replace('"data"', '"locked"'), data=())
            assert "is not readable" in error_of(path)
        finally:
            locked.chmod(0o755)


def test_unwritable_product_dir_leaves_nothing(tmp_path):
    (tmp_path / "blocker").write_text("a file where a directory should be")
    path = write(tmp_path, minimal().replace('"products"', '"blocker/products"'))
    msg = error_of(path)
    assert "[run] product_dir:" in msg and "is not a directory" in msg
    assert (tmp_path / "blocker").is_file()
    readonly = Path("/proc/faust-hpc-products")                         # read-only for root too
    path = write(tmp_path, minimal().replace('"products"', f'"{readonly}"'))
    assert "[run] product_dir:" in error_of(path) and not readonly.exists()
    assert not list(tmp_path.rglob(".faust-hpc-probe-*"))


def test_toml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, minimal() + "\nnchunks = = 4\n")
    msg = error_of(path)
    assert "TOML syntax error" in msg and "line 9" in msg


def test_runfile_not_found(tmp_path):
    msg = error_of(tmp_path / "absent.toml")
    assert "does not exist" in msg


def test_cli_exit_status_2_with_one_stderr_line(tmp_path):
    path = write(tmp_path, minimal() + '[spw."244.936GHz_CSS"]\nrms = 0.1\n', name="bad.toml")
    exe = Path(sys.executable).with_name("faust-hpc")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "faust_hpc"]
    proc = subprocess.run(cmd + ["plan", str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert 'bad.toml: [spw."244.936GHz_CSS"] unknown SPW label; did you mean "244.936GHz_CS"?' in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "data"]


# --------------------------------------------------------------------------- absurd values (real CLI)

def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("faust-hpc")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "faust_hpc"]


def _run_refused(tmp_path: Path, *args: str, needle: str) -> list[str]:
    """``faust-hpc run ...`` in ``tmp_path``: exit 2 before any work, ``needle`` in the
    last stderr line, and nothing written next to the run file."""
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run([*_cli(), "run", *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert needle in lines[-1], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "products").exists()
    return lines


@pytest.mark.parametrize("extra, needle", [
    ("[scheduler]\nretries = 99999999999999999999\n", "[scheduler] retries: must be <= 100"),
    ("[scheduler]\nretries = 101\n", "[scheduler] retries: must be <= 100"),
    ("[scheduler]\nworkers = 10000000\n", "[scheduler] workers: must be <= 100000"),
    ("[scheduler]\nthreads_per_unit = 100000\n", "[scheduler] threads_per_unit: must be <= 1024"),
    ("[scheduler]\nunit_timeout_s = nan\n", "[scheduler] unit_timeout_s: expected a number"),
    ("[scheduler]\nnode_memory_gb = inf\n", "[scheduler] node_memory_gb: expected a number"),
    ('line_vwin = "1e999km/s"\n', "[imaging] line_vwin: must be above 0 and below the speed of light"),
    ('line_vwin = "300000km/s"\n', "[imaging] line_vwin: must be above 0 and below the speed of light"),
    ('line_vwin = "nan km/s"\n', "[imaging] line_vwin:"),
    ("imsize = 9223372036854775807\n", "[imaging] imsize: must be <= 16384 (one tclean channel of 16384 px needs"),
    ("cell_arcsec = 1e300\n", "[imaging] cell_arcsec: a cell of 1e+300 arcsec is wider than 1/8 of the joint "
                              "field of view"),
    ("cell_arcsec = 1e-9\n", "[imaging] cell_arcsec: must be >= 0.001"),
    ("cell_arcsec = 0.0001\nimsize = 64\n", "[imaging] cell_arcsec: must be >= 0.001"),
    ("oversample = 1e-300\n", "[imaging] oversample: a cell of"),
    ("oversample = 200\n", "[imaging] oversample (it gives an imsize of"),
    ("oversample = 1e6\n", "[imaging] oversample: a cell of 3.6e-07 arcsec is below 0.001 arcsec"),
    ("cell_arcsec = 0.002\n", "px a side are refused"),
    ("nomask_sigma = inf\n", "[imaging] nomask_sigma: expected a number"),
    ("clean_sigma = 1e9\n", "[imaging] clean_sigma: must be <= 1000"),
    ("imsize = 8000\n[scheduler]\nnode_memory_gb = 2\n", "imsize: one tclean channel of 8000 px needs"),
    ('[spw."233.796GHz_cont"]\nmoments_vwin_kms = 1e6\n', "moments_vwin_kms: must be <= 299792.458"),
    ('[spw."233.796GHz_cont"]\ncyclefactor = 1e300\n', "cyclefactor: must be <= 100"),
    ('[spw."233.796GHz_cont"]\nscales = [0, 1000000000000000000]\n', "scales: must be <="),
    ('[spw."233.796GHz_cont"]\nautomask = { growiterations = 99999999999 }\n', "growiterations: must be <="),
    ('[spw."233.796GHz_cont"]\nautomask = { noisethreshold = 1e300 }\n', "noisethreshold: must be <= 1000"),
])
def test_absurd_numbers_refused_before_any_work(tmp_path, extra, needle):
    text = minimal(extra="" if extra.startswith("[") else extra) + (extra if extra.startswith("[") else "")
    path = write(tmp_path, text, name="run.toml")
    lines = _run_refused(tmp_path, str(path), needle=needle)
    assert lines == [lines[-1]] and lines[-1].startswith("faust-hpc: error: run.toml: ")


def test_sane_bounds_keep_the_examples_valid():
    for config in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml")):
        load_runfile(config, check_paths=False)


@pytest.mark.parametrize("flag, value", [
    ("--drain-grace", "-5"), ("--drain-grace", "nan"), ("--drain-grace", "inf"),
    ("--progress-every", "0"), ("--progress-every", "-1"), ("--local-workers", "-3"),
    ("--local-workers", "0"),
])
def test_run_flags_refuse_absurd_values(tmp_path, flag, value):
    path = write(tmp_path, minimal(), name="run.toml")
    lines = _run_refused(tmp_path, str(path), f"{flag}={value}", needle=f"argument {flag}:")
    assert lines[-1].startswith("faust-hpc run: error:")        # argparse: usage, then one error line


# --------------------------------------------------------------------------- [spw] tables the run ignores

def test_spw_table_for_an_unselected_spw_is_refused(tmp_path):
    path = write(tmp_path, minimal(extra='spws = ["218.222GHz_H2CO"]\n') + '[spw."233.796GHz_cont"]\nrms = 0.1\n',
                 name="run.toml")
    assert error_of(path) == ('run.toml: [spw."233.796GHz_cont"] this run does not image this SPW ([imaging] '
                              'spws selects 218.222GHz_H2CO); add it to spws or remove the table')
    _run_refused(tmp_path, str(path), needle='[spw."233.796GHz_cont"] this run does not image this SPW')


# --------------------------------------------------------------------------- whole-program run files

def test_several_setups_in_one_run_file(tmp_path):
    from faust_hpc import catalog

    path = write(tmp_path, minimal(extra='weightings = [0.5]\n').replace("setup = 1", "setup = [1, 3]"),
                 name="run.toml", data=("CB68-Setup1", "CB68-Setup3"))
    spec = load_runfile(path)
    assert spec.setups == (1, 3) and spec.arrays == ("default",)      # several Setups: each its own kind
    s1, s3 = catalog.spws_for_setup(1), catalog.spws_for_setup(3)
    assert spec.spw_labels == tuple(s.label for s in s1 + s3)         # "all": each Setup's SPWs, in order
    assert spec.setup_of(s3[0].label) == 3 and spec.setup_of(s1[-1].label) == 1
    keys = spec.image_keys()
    assert len(keys) == len(s1) + len(s3)
    assert {k.array for k in keys if spec.setup_of(k.label) == 1} == {"joint"}
    assert {k.array for k in keys if spec.setup_of(k.label) == 3} == {"12m"}
    with pytest.raises(ValueError, match="setup_of"):                 # no one Setup to ask for
        spec.setup  # noqa: B018
    lines = spec.spw_labels[:1] + spec.spw_labels[-1:]
    explicit = minimal(extra=f'spws = {list(lines)!r}\narrays = ["12m", "default"]\n'.replace("'", '"'))
    spec = load_runfile(write(tmp_path, explicit.replace("setup = 1", "setup = [3, 1, 3]"), name="x.toml",
                              data=("CB68-Setup1", "CB68-Setup3")))
    assert spec.setups == (3, 1)                                      # run-file order, no repeats
    assert [k.path for k in spec.image_keys()] == [
        f"CB68/{lines[0]}/12m/0.5", f"CB68/{lines[0]}/joint/0.5", f"CB68/{lines[1]}/12m/0.5"]


def test_setup_all_fields_all_is_the_whole_program(tmp_path):
    from faust_hpc import catalog

    text = minimal().replace('fields = ["CB68"]', 'fields = "all"').replace("setup = 1", 'setup = "all"')
    path = write(tmp_path, text, name="run.toml")
    spec = load_runfile(path, check_paths=False)
    assert spec.fields == tuple(catalog.ALL_FIELD_NAMES) and len(spec.fields) == 13
    assert spec.setups == (1, 2, 3) and len(spec.spw_labels) == 33
    assert len(spec.image_keys()) == 13 * 33 * len(spec.weightings)
    program = load_runfile(Path(__file__).resolve().parents[1] / "configs" / "program.toml", check_paths=False)
    assert len(program.image_keys()) == 13 * 33 and program.nchunks == "auto"
    assert {(program.setup_of(k.label), k.array) for k in program.image_keys()} == {(1, "joint"), (2, "joint"),
                                                                                     (3, "12m")}
    # every Setup of every field must have its data directory
    msg = error_of(write(tmp_path, minimal().replace("setup = 1", "setup = [1, 2]"), name="d.toml",
                         data=("CB68-Setup1",)))
    assert "[run] data_dir: no directory CB68-Setup2" in msg


@pytest.mark.parametrize("setup, extra, needle", [
    ("[1, 4]", "", '[imaging] setup: expected the integer 1, 2 or 3, got integer 4 (also allowed: an array'),
    ('"every"', "", '[imaging] setup: expected the integer 1, 2 or 3, got string "every"'),
    ("[]", "", "[imaging] setup: expected the integer 1, 2 or 3, got array []"),
    ('"all"', 'arrays = ["joint"]\n', '[imaging] arrays: array kind "joint" is not available for Setup 3'),
    ("[1, 2]", 'spws = ["244.936GHz_CS"]\n', "[imaging] spws: selects no SPW of Setup 1"),
    ("[1, 2]", 'spws = ["93.176GHz_N2Hp"]\n', 'SPW "93.176GHz_N2Hp" belongs to Setup 3, but this run images '
                                              'Setups 1, 2'),
    ("[1, 2]", 'arrays = ["defualt"]\n', 'did you mean "default"?'),
])
def test_several_setups_refused_with_one_line(tmp_path, setup, extra, needle):
    path = write(tmp_path, minimal(extra=extra).replace("setup = 1", f"setup = {setup}"), name="run.toml")
    msg = error_of(path, check_paths=False)
    assert needle in msg, msg
    if "arrays:" in needle:
        assert '"default" images each Setup with its own kind' in msg
        _run_refused(tmp_path, str(path), needle=needle)              # exit 2, one line, nothing written


def test_a_window_is_imaged_in_one_setup(tmp_path):
    text = minimal(extra='spws = ["HI", "244.936GHz_CS", "216.113GHz_DCOp"]\n').replace("setup = 1", "setup = [1, 2]")
    text += '[window."HI"]\nrestfreq = "1420.405752MHz"\n'
    msg = error_of(write(tmp_path, text, name="run.toml"), check_paths=False)
    assert '[imaging] spws: the run file\'s window "HI" is imaged in one Setup\'s data' in msg
    one = text.replace("setup = [1, 2]", "setup = 2").replace(', "216.113GHz_DCOp"', "")
    spec = load_runfile(write(tmp_path, one, name="one.toml"), check_paths=False)
    assert spec.setup == 2 and spec.setup_of("HI") == 2 and spec.setup_of("244.936GHz_CS") == 2


def test_one_setup_run_files_keep_their_digest():
    """A run started before several Setups existed resumes: its spec digest is unchanged."""
    from faust_hpc.run.frozen import spec_hash

    configs = Path(__file__).resolve().parents[1] / "configs"
    digests = {name: spec_hash(load_runfile(configs / name, check_paths=False))
               for name in ("setup1.toml", "setup2.toml", "setup3.toml")}
    assert digests == {"setup1.toml": "90b21ccb3beb48e8", "setup2.toml": "8ce4cb7f298234b7",
                       "setup3.toml": "709f305976ba9eeb"}
