"""Packaging checks that run in the default suite (fast; no PyInstaller build, no install).

The full build + .deb + apt install + Xvfb launch is packaging/test_installer.sh (slow, root).
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata as md
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGING = REPO / "packaging"


def _load(name: str):
    """packaging/ is not a package (it would shadow PyPA's ``packaging``): load by path."""
    spec = importlib.util.spec_from_file_location(f"cxr_packaging_{name}", PACKAGING / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


cfg = _load("bundle_config")
samples = _load("collect_samples")
deps = _load("deb_depends")


# --- build.spec -----------------------------------------------------------------------------------

def test_packaging_dir_is_not_a_python_package():
    assert not (PACKAGING / "__init__.py").exists()
    import packaging.version  # PyPA's library must still be the one imported

    assert "site-packages" in str(Path(packaging.version.__file__))


def test_build_spec_is_one_folder_and_uses_the_shared_config():
    tree = ast.parse((REPO / "build.spec").read_text(), filename="build.spec")
    calls = {n.func.id: n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "COLLECT" in calls, "one-folder bundles end in COLLECT"
    exe = calls["EXE"]
    kw = {k.arg: k.value for k in exe.keywords}
    assert isinstance(kw.get("exclude_binaries"), ast.Constant) and kw["exclude_binaries"].value is True
    src = (REPO / "build.spec").read_text()
    assert "variant_from_env()" in src and "keep_entry(" in src and "resource_datas(" in src
    assert "/" + "work/" not in src  # no absolute paths of the build machine: relative to SPECPATH


def test_variant_from_env():
    assert cfg.variant_from_env({}) == "cpu"
    assert cfg.variant_from_env({"CXR_BUNDLE_VARIANT": " CUDA "}) == "cuda"
    with pytest.raises(ValueError, match="cpu, cuda"):
        cfg.variant_from_env({"CXR_BUNDLE_VARIANT": "gpu"})
    assert "triton" in cfg.excluded_modules("cpu") and "triton" not in cfg.excluded_modules("cuda")


def test_trim_rules_per_variant():
    trimmed = ["nvidia/cudnn/lib/libcudnn_cnn.so.9", "nvidia/cudnn/lib/libcudnn_engines_precompiled.so.9",
               "torch/lib/libtorch_cuda_linalg.so", "nvidia/cu13/lib/libcusolver.so.12",
               "nvidia/nvshmem/lib/nvshmem_transport_ucx.so.3", "triton/_C/libtriton.so"]
    kept = ["nvidia/cudnn/lib/libcudnn.so.9", "torch/lib/libtorch_cuda.so", "nvidia/cu13/lib/libcublasLt.so.13",
            "nvidia/cu13/lib/libnvrtc.so.13", "nvidia/nvshmem/lib/libnvshmem_host.so.3", "torch/lib/libtorch_cpu.so"]
    for d in trimmed:
        assert cfg.is_trimmed(d, "cpu"), d
        assert not cfg.is_trimmed(d, "cuda"), d
    for d in kept:
        assert not cfg.is_trimmed(d, "cpu"), d
    # host desktop libraries from the build machine go (the .deb depends on them); wheel copies stay
    assert not cfg.keep_entry("libxcb-icccm.so.4", "/lib/x86_64-linux-gnu/libxcb-icccm.so.4", "cuda", linux=True)
    assert cfg.keep_entry("pillow.libs/libxcb-9065bb12.so.1.1.0",
                          "/v/lib/python3.11/site-packages/pillow.libs/libxcb-9065bb12.so.1.1.0", "cpu", linux=True)
    assert cfg.keep_entry("libxcb-9065bb12.so.1.1.0", "pillow.libs/libxcb-9065bb12.so.1.1.0", "cpu",
                          linux=True, typecode="SYMLINK")
    assert not cfg.keep_entry("libcudnn_cnn.so.9", "nvidia/cudnn/lib/libcudnn_cnn.so.9", "cpu",
                              linux=True, typecode="SYMLINK")
    assert cfg.keep_entry("libxcb-icccm.so.4", "/lib/x86_64-linux-gnu/libxcb-icccm.so.4", "cpu", linux=False)


def _needed(lib: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def test_cpu_trim_keeps_every_library_torch_links():
    """Whatever the installed torch links at import (transitively) must survive the cpu trim."""
    if shutil.which("readelf") is None or not sys.platform.startswith("linux"):
        pytest.skip("needs readelf (binutils) on Linux")
    torch_spec = importlib.util.find_spec("torch")
    site = Path(torch_spec.origin).parents[1]
    libs = {p.name: p for p in site.glob("torch/lib/*.so*")}
    libs.update({p.name: p for p in site.glob("nvidia/*/lib/*.so*")})
    todo = [site / "torch" / "lib" / "libtorch.so", *site.glob("torch/_C*.so")]
    todo = [p for p in todo if p.exists()]
    assert todo, "torch libraries not found"
    seen: set[str] = set()
    while todo:
        lib = todo.pop()
        if lib.name in seen:
            continue
        seen.add(lib.name)
        todo += [libs[n] for n in _needed(lib) if n in libs]
    for name in sorted(seen):
        dest = libs[name].relative_to(site).as_posix() if name in libs else name
        assert not cfg.is_trimmed(dest, "cpu"), f"{dest} is linked by torch but trimmed from the cpu bundle"
    assert "libcudnn.so.9" in seen or not any("cudnn" in n for n in libs)  # the stub we keep is really needed


def test_resource_datas_point_at_existing_files(tmp_path):
    staged = tmp_path / "staged"
    (staged / "samples").mkdir(parents=True)
    (staged / "samples" / "a.png").write_bytes(b"x")
    datas = cfg.resource_datas(REPO, staged)
    assert datas
    for src, dest in datas:
        assert Path(src).is_file(), src
        assert dest == "resources" or dest.startswith("resources/"), dest
    dests = {(Path(s).name, d) for s, d in datas}
    assert ("cxr-review.svg", "resources/icons") in dests
    assert ("a.png", "resources/samples") in dests
    model = REPO / "resources" / "models" / "demo-cxr.safetensors"
    assert (("demo-cxr.safetensors", "resources/models") in dests) == model.is_file()


def test_torchvision_compiled_ops_exist_where_the_spec_looks():
    tv = Path(importlib.util.find_spec("torchvision").origin).parent
    for name in cfg.TORCHVISION_BINARIES:
        assert (tv / name).is_file() or list(tv.glob(Path(name).stem + ".*")), name


def test_dicom_plugin_metadata_list_is_complete():
    """Every installed distribution that registers pylibjpeg entry points is copied into the bundle."""
    providers = set()
    for dist in md.distributions():
        eps = [ep for ep in dist.entry_points if ep.group.startswith("pylibjpeg.")]
        if eps:
            providers.add(dist.metadata["Name"].lower().replace("_", "-"))
    assert providers, "no pylibjpeg plugins installed"
    assert providers <= {d.lower() for d in cfg.DICOM_PLUGIN_DISTRIBUTIONS}, providers
    groups = {ep.name for ep in md.entry_points(group="pylibjpeg.pixel_data_decoders")}
    for uid in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"):
        assert uid in groups, uid


def test_lazy_imports_and_runtime_metadata_exist_and_cover_the_self_tests_libraries():
    """What the bundle adds by name must exist here (a typo would only show in a build), and every library
    the self-test's component check uses is either traced or listed."""
    import importlib

    from cxr_desktop.runtime_components import COMPONENTS

    for name in cfg.LAZY_IMPORTS:
        importlib.import_module(name)
    for dist in cfg.RUNTIME_METADATA:
        md.version(dist)
    from cxr_desktop import redaction

    assert redaction.ANNEX_E_EDITION in " ".join(cfg.LAZY_IMPORTS)  # the pinned table module is bundled
    assert {"imagecodecs._shared_cython", "jpeg_ls", "simplejpeg"} <= set(cfg.LAZY_IMPORTS)
    assert len(COMPONENTS) >= 9
    src = (REPO / "build.spec").read_text()
    assert "cfg.LAZY_IMPORTS" in src and "cfg.RUNTIME_METADATA" in src


def test_pyinstaller_pins_match_what_is_installed():
    text = (REPO / "pyproject.toml").read_text()
    pins = dict(re.findall(r'"(pyinstaller(?:-hooks-contrib)?)==([^"]+)"', text))
    assert set(pins) == {"pyinstaller", "pyinstaller-hooks-contrib"}
    for dist, version in pins.items():
        try:
            installed = md.version(dist)
        except md.PackageNotFoundError:
            continue  # the [build] extra is optional
        assert installed == version, f"{dist}: pyproject pins {version}, installed {installed}"


# --- desktop entry, icons, Debian control ------------------------------------------------------------

def test_desktop_entry_is_valid():
    path = PACKAGING / "cxr-review.desktop"
    if shutil.which("desktop-file-validate"):
        proc = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0 and "error" not in proc.stdout, proc.stdout + proc.stderr
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read(path)
    entry = cp["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Exec"].split()[0] == "cxr-desktop"
    assert entry["Terminal"] == "false"
    assert (REPO / "resources" / "icons" / f"{entry['Icon']}.svg").is_file()


def test_icons_have_the_sizes_the_deb_installs():
    from PIL import Image

    script = (PACKAGING / "build_deb.sh").read_text()
    sizes = [int(s) for s in re.search(r"for s in ([\d ]+); do", script).group(1).split()]
    for s in sizes:
        with Image.open(REPO / "resources" / "icons" / f"cxr-review-{s}.png") as im:
            assert im.size == (s, s) and im.mode == "RGBA"
            assert im.getchannel("A").getextrema() == (0, 255)  # rounded corners: transparent and opaque
    assert (REPO / "resources" / "icons" / "cxr-review.ico").is_file()


def test_deb_control_template_declares_depends():
    text = (PACKAGING / "deb" / "control.in").read_text()
    fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", text, flags=re.M))
    for key in ("Package", "Version", "Architecture", "Maintainer", "Depends", "Description", "Installed-Size"):
        assert key in fields, key
    assert fields["Package"] == "cxr-review"
    assert fields["Depends"] == "@DEPENDS@"  # filled by build_deb.sh from ldd over the bundle
    script = (PACKAGING / "build_deb.sh").read_text()
    assert "deb_depends.py" in script and "s|@DEPENDS@|$DEPENDS|" in script
    assert "/opt/cxr-review" in script and "dpkg-deb" in script
    postrm = (PACKAGING / "deb" / "postrm").read_text()
    assert "rm -rf /opt/cxr-review" in postrm and ".local/share" not in postrm.split("set -e")[1]


@pytest.mark.parametrize("script", ["build_bundle.sh", "build_deb.sh", "test_installer.sh", "deb/postinst",
                                    "deb/postrm", "deb/cxr-desktop"])
def test_shell_scripts_parse(script):
    path = PACKAGING / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    proc = subprocess.run(["sh" if script.startswith("deb/") else "bash", "-n", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- Depends discovery -------------------------------------------------------------------------------

LDD_SAMPLE = """\
\tlinux-vdso.so.1 (0x00007ffd1a1f2000)
\tlibQt6Gui.so.6 => /opt/b/_internal/PySide6/Qt/lib/libQt6Gui.so.6 (0x00007f0a1c000000)
\tlibxcb-icccm.so.4 => /lib/x86_64-linux-gnu/libxcb-icccm.so.4 (0x00007f0a1bf00000)
\tlibxcb-cursor.so.0 => not found
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0a1d000000)
"""


def test_parse_ldd():
    r = deps.parse_ldd(LDD_SAMPLE)
    assert r.resolved["libxcb-icccm.so.4"] == "/lib/x86_64-linux-gnu/libxcb-icccm.so.4"
    assert r.resolved["ld-linux-x86-64.so.2"] == "/lib64/ld-linux-x86-64.so.2"
    assert "linux-vdso.so.1" not in r.resolved
    assert r.missing == ["libxcb-cursor.so.0"]


def test_parse_dpkg_search_and_format():
    text = ("libxcb-icccm4:amd64: /lib/x86_64-linux-gnu/libxcb-icccm.so.4\n"
            "libc6:amd64, libc6-dbg: /lib/x86_64-linux-gnu/libc.so.6\n"
            "dpkg-query: no path found matching pattern /nope\n")
    assert deps.parse_dpkg_search(text) == {"/lib/x86_64-linux-gnu/libxcb-icccm.so.4": "libxcb-icccm4",
                                            "/lib/x86_64-linux-gnu/libc.so.6": "libc6"}
    assert deps.format_depends({"libxcb1", "libc6"}, "2.36") == "libc6 (>= 2.36), libxcb1"
    assert deps.is_essential("_internal/PySide6/Qt/plugins/platforms/libqxcb.so")
    assert not deps.is_essential("_internal/PySide6/Qt/plugins/platforms/libqwayland.so")


def test_depends_of_the_real_qt_xcb_plugin(tmp_path):
    """ldd + dpkg over PySide6's xcb plugin name the xcb packages (where this host has them)."""
    if not (shutil.which("ldd") and shutil.which("dpkg")):
        pytest.skip("needs ldd and dpkg (Debian/Ubuntu)")
    qt = Path(importlib.util.find_spec("PySide6").origin).parent / "Qt"
    plugin = qt / "plugins" / "platforms" / "libqxcb.so"
    if not plugin.exists():
        pytest.skip("PySide6 has no xcb plugin here")
    host = deps.parse_ldd(subprocess.run(["ldd", str(plugin)], capture_output=True, text=True).stdout)
    if "libxcb-icccm.so.4" not in host.resolved:
        pytest.skip("libxcb-icccm4 is not installed on this host")
    bundle = tmp_path / "cxr-review"
    dest = bundle / "_internal" / "PySide6" / "Qt"
    (dest / "lib").mkdir(parents=True)
    for path in host.resolved.values():  # the Qt libraries the plugin links, as the bundle holds them
        if Path(path).resolve().is_relative_to((qt / "lib").resolve()):
            shutil.copy2(path, dest / "lib" / Path(path).name)
    (dest / "plugins" / "platforms").mkdir(parents=True)
    shutil.copy2(plugin, dest / "plugins" / "platforms")
    report = deps.analyse(bundle)
    pkgs = set(report["packages"])
    assert {"libxcb-icccm4", "libxcb-keysyms1", "libxkbcommon-x11-0", "libc6"} <= pkgs, pkgs
    assert not any(p.startswith("libqt6") for p in pkgs)  # Qt itself resolves inside the bundle
    assert "libc6 (>= " in report["depends"]


# --- sample staging and the self-test's transfer-syntax check ----------------------------------------

@pytest.fixture(scope="module")
def staged(tmp_path_factory, shared_data):
    dest = tmp_path_factory.mktemp("staged-resources")
    summary = samples.stage(dest, shared_data)
    return dest, summary


def test_select_samples(cxr_dir):
    chosen = samples.select_samples(cxr_dir)
    assert [p.name for p in chosen] == [n for n in samples.SAMPLE_STUDIES if (cxr_dir / n).exists()]
    assert {p.suffix for p in chosen} >= {".png", ".jpg", ".dcm"}
    assert samples.select_samples(cxr_dir, ["no-such-file.png"]) == []


def test_transfer_syntax_selection_covers_required_and_skips_undecodable(staged, dicom_dir):
    dest, summary = staged
    assert summary["missing_required"] == []
    by_uid = {t["uid"]: t for t in summary["transfer_syntaxes"]}
    assert set(samples.REQUIRED_TRANSFER_SYNTAXES) <= set(by_uid)
    assert "liver_rle.dcm" not in {t["source"] for t in summary["transfer_syntaxes"]}  # 1-bit RLE: undecodable
    rle = by_uid["1.2.840.10008.1.2.5"]
    # the smallest *decodable* RLE file, not the smallest RLE file
    import pydicom

    rle_sizes = sorted((p.stat().st_size, p.name) for p in dicom_dir.glob("*.dcm")
                       if str(pydicom.dcmread(p, stop_before_pixels=True, force=True).file_meta.TransferSyntaxUID)
                       == "1.2.840.10008.1.2.5" and p.name != "liver_rle.dcm")
    assert rle["source"] == rle_sizes[0][1]
    for uid in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"):
        assert "pylibjpeg" in by_uid[uid]["plugins"]
    manifest = json.loads((dest / "selftest" / "manifest.json").read_text())
    assert manifest["required"] == list(samples.REQUIRED_TRANSFER_SYNTAXES)
    assert sorted(p.name for p in (dest / "selftest").glob("*.dcm")) == sorted(f["file"] for f in manifest["files"])
    assert sorted(p.name for p in (dest / "samples").iterdir()) == sorted(summary["samples"])


def test_stage_refuses_without_shared_data(tmp_path):
    with pytest.raises(RuntimeError, match="CXR_SHARED_DATA"):
        samples.stage(tmp_path / "out", tmp_path / "no-shared-data")
    summary = samples.stage(tmp_path / "out", tmp_path / "no-shared-data", strict=False)
    assert summary["samples"] == [] and summary["missing_required"]


def test_selftest_transfer_syntax_check_passes_then_catches_damage(staged, tmp_path):
    from cxr_desktop.selftest import check_transfer_syntaxes

    src, _ = staged
    ts = tmp_path / "selftest"
    shutil.copytree(src / "selftest", ts)
    ok, results = check_transfer_syntaxes(ts)
    assert ok, results
    assert results["jpeg-ls-lossless"] == "JPEG-LS Lossless Image Compression"

    # a truncated file fails, and the report says which one
    j2k = ts / "jpeg2000.dcm"
    j2k.write_bytes(j2k.read_bytes()[:2000])
    ok, results = check_transfer_syntaxes(ts)
    assert not ok and results["jpeg2000"].startswith("FAILED")
    assert results["jpeg-ls-lossless"] == "JPEG-LS Lossless Image Compression"

    # a decoder plugin that this installation lacks fails the check (entry points not bundled)
    shutil.rmtree(ts)
    shutil.copytree(src / "selftest", ts)
    manifest = json.loads((ts / "manifest.json").read_text())
    for f in manifest["files"]:
        if f["name"] == "jpeg-ls-lossless":
            f["plugins"] = ["pylibjpeg", "not-a-plugin"]
    (ts / "manifest.json").write_text(json.dumps(manifest))
    ok, results = check_transfer_syntaxes(ts)
    assert not ok and "not-a-plugin" in results["jpeg-ls-lossless"]

    # a required syntax without a file fails
    manifest["files"] = [f for f in manifest["files"] if f["name"] != "rle-lossless"]
    for f in manifest["files"]:
        f.pop("plugins", None)
    (ts / "manifest.json").write_text(json.dumps(manifest))
    ok, results = check_transfer_syntaxes(ts)
    assert not ok and results["RLE Lossless"].startswith("FAILED: no file")


@pytest.mark.slow
def test_entry_point_dispatches_to_the_command_line_tools():
    """One executable in the bundle: CXR_ENTRY picks the tool (the .deb's cxr-screen etc. set it)."""
    import os

    def run(entry):
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
        if entry is not None:
            env["CXR_ENTRY"] = entry
        return subprocess.run([sys.executable, str(PACKAGING / "entry.py"), "--help"], capture_output=True,
                              text=True, env=env, cwd=REPO, timeout=120)

    screen = run("screen")
    assert screen.returncode == 0 and "--resume" in screen.stdout  # cxr-screen's own options
    desktop = run(None)
    assert desktop.returncode == 0 and "--self-test" in desktop.stdout
    bad = run("bogus")
    assert bad.returncode == 2 and "CXR_ENTRY must be one of" in bad.stderr
    assert "export CXR_ENTRY=%s" in (PACKAGING / "build_deb.sh").read_text()
