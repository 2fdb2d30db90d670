"""Regenerate the Python gRPC stubs (gen/python) and Envoy's descriptor set (gateway/fiscal.pb).

    python protos/generate.py           # write them
    python protos/generate.py --check   # exit 1 if the checked-in files drifted from protos/

The googleapis protos (google/api/annotations.proto, http.proto) come from the
googleapis-common-protos wheel, the well-known types from grpcio-tools.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PY_OUT = ROOT / "gen" / "python"
DESCRIPTOR_OUT = ROOT / "gateway" / "fiscal.pb"


def _include_dirs() -> list[str]:
    import google.api.annotations_pb2  # googleapis-common-protos ships the .proto beside it

    googleapis_root = Path(google.api.annotations_pb2.__file__).resolve().parent.parent.parent
    wkt_root = Path(str(importlib.resources.files("grpc_tools") / "_proto"))
    return [str(PROTO_ROOT), str(googleapis_root), str(wkt_root)]


def _protoc(args: list[str]) -> None:
    from grpc_tools import protoc

    code = protoc.main(["grpc_tools.protoc", *args])
    if code != 0:
        raise SystemExit(f"protoc failed ({code}): {' '.join(args)}")


def generate(py_out: Path, descriptor_out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    includes = [f"-I{d}" for d in _include_dirs()]
    py_out.mkdir(parents=True, exist_ok=True)
    _protoc([*includes, f"--python_out={py_out}", f"--pyi_out={py_out}", f"--grpc_python_out={py_out}", *protos])
    # Every generated directory is a regular package, so setuptools finds it.
    for directory in [p for p in py_out.rglob("*") if p.is_dir()]:
        (directory / "__init__.py").touch()
    descriptor_out.parent.mkdir(parents=True, exist_ok=True)
    _protoc([*includes, "--include_imports", "--include_source_info",
             f"--descriptor_set_out={descriptor_out}", *protos])


def _same_tree(a: Path, b: Path) -> list[str]:
    diffs: list[str] = []
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    diffs += [f"missing: {p}" for p in sorted(files_a - files_b)]
    diffs += [f"extra: {p}" for p in sorted(files_b - files_a)]
    diffs += [f"differs: {p}" for p in sorted(files_a & files_b) if not filecmp.cmp(a / p, b / p, shallow=False)]
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if generated files drifted from protos/")
    args = parser.parse_args()
    if not args.check:
        if PY_OUT.exists():
            shutil.rmtree(PY_OUT)
        generate(PY_OUT, DESCRIPTOR_OUT)
        print(f"wrote {PY_OUT.relative_to(ROOT)} and {DESCRIPTOR_OUT.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp_py, tmp_desc = Path(tmp) / "python", Path(tmp) / "fiscal.pb"
        generate(tmp_py, tmp_desc)
        diffs = _same_tree(tmp_py, PY_OUT)
        if not DESCRIPTOR_OUT.exists() or not filecmp.cmp(tmp_desc, DESCRIPTOR_OUT, shallow=False):
            diffs.append(f"differs: {DESCRIPTOR_OUT.relative_to(ROOT)}")
    if diffs:
        print("generated code drifted from protos/ (run `make protos`):\n  " + "\n  ".join(diffs))
        return 1
    print("generated code matches protos/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
