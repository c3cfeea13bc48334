"""paa_core._C built with CUDA, handled as a file: the hash of the sources it comes from,
the check that every op has a CUDA kernel (but the CPU-only Winograd transforms), and the
manifest of a prebuilt copy (gpu_carry/, made by dev/prepare_gpu_run.sh) with the check, on
the GPU machine, that the copy fits it.
A prebuilt library saves the GPU machine its minutes of compiling, but only a library built
from the same sources, for the same Python and torch, with kernels for that GPU.

    python dev/cuda_lib.py sources               # sha256 of setup.py and csrc/
    python dev/cuda_lib.py ops LIB [--run]       # every GPU op has a CUDA kernel (--run: runs one)
    python dev/cuda_lib.py manifest LIB --arch 9.0 --out DIR/manifest.json [...]
    python dev/cuda_lib.py verify DIR            # on the GPU machine: can DIR's library be used?

Exit status 0 when the check passes; each failed check prints one line saying why.
"""

import argparse
import datetime
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def source_files(root):
    """setup.py and every file under csrc/, as sorted paths relative to `root`: what the
    compiled library is made of."""
    files = ["setup.py"]
    for folder, _, names in os.walk(os.path.join(root, "csrc")):
        files += [os.path.relpath(os.path.join(folder, n), root) for n in names]
    return sorted(files)


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def sources_sha256(root):
    """One hash over the sources' paths and contents, and the per-file hashes."""
    per_file = {p: file_sha256(os.path.join(root, p)) for p in source_files(root)}
    total = hashlib.sha256("".join(f"{p}\0{h}\n" for p, h in per_file.items()).encode())
    return total.hexdigest(), per_file


def load_library(lib):
    """Loads `lib` as paa_core._C, which registers its ops with torch's dispatcher."""
    import torch  # noqa: F401  (libtorch must be loaded before the extension)

    spec = importlib.util.spec_from_file_location("paa_core._C", lib)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


# The Winograd tile transforms serve the CPU's 3x3 convolutions only (on a GPU cuDNN picks
# its own algorithms), so they have no CUDA kernel.
CPU_ONLY_PREFIX = "winograd_"


def check_ops(lib, run):
    """Loads `lib`; every paa_core op but the CPU-only ones must have a CUDA kernel, and with `run` the CUDA NMS
    must give the CPU kernel's answer (a library without machine code for this GPU fails
    here with 'no kernel image is available')."""
    import torch

    load_library(lib)
    ops = sorted(
        n.split("::")[1]
        for n in torch._C._dispatch_get_all_op_names()
        if n.startswith("paa_core::")
    )
    missing = [
        n
        for n in ops
        if not n.startswith(CPU_ONLY_PREFIX)
        and not torch._C._dispatch_has_kernel_for_dispatch_key(f"paa_core::{n}", "CUDA")
    ]
    if not ops or missing:
        print(f"{lib}: ops without a CUDA kernel: {missing or 'no ops registered'}")
        return False
    cpu_only = [n for n in ops if n.startswith(CPU_ONLY_PREFIX)]
    gpu_ops = [n for n in ops if n not in cpu_only]
    print(
        f"{os.path.basename(lib)}: CUDA kernels of {', '.join(gpu_ops)}; "
        f"CPU only: {', '.join(cpu_only)}"
    )
    if run:
        generator = torch.Generator().manual_seed(0)
        corners = torch.rand(500, 2, generator=generator) * 400
        boxes = torch.cat([corners, corners + 10 + torch.rand(500, 2, generator=generator) * 90], 1)
        scores = torch.rand(500, generator=generator)
        on_cpu = torch.ops.paa_core.nms(boxes, scores, 0.5)
        on_gpu = torch.ops.paa_core.nms(boxes.cuda(), scores.cuda(), 0.5).cpu()
        if not torch.equal(on_cpu, on_gpu):
            print(f"CUDA NMS keeps {on_gpu.numel()} boxes, the CPU kernel {on_cpu.numel()}")
            return False
        print(
            f"CUDA NMS ran on {torch.cuda.get_device_name(0)}: {on_gpu.numel()} of 500 boxes kept, as on the CPU"
        )
    return True


def nvcc():
    """(path, version) of the nvcc a build would use: CUDA_HOME's, else the one on PATH,
    else /usr/local/cuda's (torch's search order); the version is 'missing' without one."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    path = os.path.join(home, "bin", "nvcc") if home else shutil.which("nvcc")
    path = path or "/usr/local/cuda/bin/nvcc"
    try:
        text = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return path, "missing"
    release = [
        line.split("release", 1)[1].strip(" ,") for line in text.splitlines() if "release" in line
    ]
    return path, release[0] if release else "n/a"


def write_manifest(args):
    import torch

    total, per_file = sources_sha256(REPO)
    wheels = sorted(os.listdir(args.wheels)) if args.wheels and os.path.isdir(args.wheels) else []
    manifest = {
        "library": os.path.basename(args.lib),
        "library_sha256": file_sha256(args.lib),
        "built_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "commit": args.commit,
        "uncommitted_changes": args.dirty,
        "python": sys.version.split()[0],
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "nvcc": "{1} ({0})".format(*nvcc()),
        "cuda_arch": args.arch,
        "sources_sha256": total,
        "sources": per_file,
        "wheels": wheels,
        "cpu_suite": args.cpu_suite,
    }
    with open(args.out, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(
        f"wrote {args.out}: {manifest['library']} for sm_{args.arch.replace('.', '')}, torch {torch.__version__}"
    )


def verify(folder):
    """True when `folder`'s library can replace a build on this machine; prints each check."""
    import torch

    path = os.path.join(folder, "manifest.json")
    if not os.path.exists(path):
        print(f"{path} not found (dev/prepare_gpu_run.sh makes it)")
        return False
    with open(path) as f:
        manifest = json.load(f)
    lib = os.path.join(folder, manifest["library"])
    capability = (
        "{}.{}".format(*torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None
    )
    arches = [a.replace("+PTX", "") for a in manifest["cuda_arch"].replace(",", ";").split(";")]
    names = ", ".join("sm_" + a.replace(".", "") for a in arches)
    checks = [
        (os.path.exists(lib), f"{lib} exists", f"{lib} not found"),
        (
            manifest["ext_suffix"] == sysconfig.get_config_var("EXT_SUFFIX"),
            f"built for this Python ({manifest['python']})",
            f"built for Python {manifest['python']}, this is {sys.version.split()[0]}",
        ),
        (
            manifest["torch"] == torch.__version__,
            f"built against this torch ({torch.__version__})",
            f"built against torch {manifest['torch']}, this machine has {torch.__version__}",
        ),
        (
            manifest["sources_sha256"] == sources_sha256(REPO)[0],
            "built from these sources (setup.py, csrc/)",
            "built from other sources: setup.py or csrc/ changed since it was packed",
        ),
        (
            capability in arches,
            f"has machine code for this GPU ({names})",
            f"has machine code for {names} only, and "
            + (
                f"this GPU is sm_{capability.replace('.', '')}"
                if capability
                else "no GPU is visible"
            ),
        ),
    ]
    for ok, good, bad in checks:
        print(("ok: " + good) if ok else ("no: " + bad))
        if not ok:
            return False
    print(f"packed from commit {manifest['commit']} on {manifest['built_utc']} UTC")
    return check_ops(lib, run=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sources", help="print the sha256 of setup.py and csrc/")
    ops = sub.add_parser("ops", help="check that LIB has a CUDA kernel for every op")
    ops.add_argument("lib")
    ops.add_argument("--run", action="store_true", help="also run the CUDA NMS (needs a GPU)")
    manifest = sub.add_parser("manifest", help="write the manifest of a prebuilt LIB")
    manifest.add_argument("lib")
    manifest.add_argument("--arch", required=True, help="its TORCH_CUDA_ARCH_LIST")
    manifest.add_argument("--out", required=True)
    manifest.add_argument("--commit", default="n/a")
    manifest.add_argument("--dirty", action="store_true", help="the tree had uncommitted changes")
    manifest.add_argument("--wheels", help="folder of the wheels carried with it")
    manifest.add_argument("--cpu-suite", default="not run", help="the CPU suite's summary line")
    check = sub.add_parser("verify", help="can the prebuilt library in DIR be used here?")
    check.add_argument("folder")
    args = parser.parse_args()

    if args.command == "sources":
        print(sources_sha256(REPO)[0])
    elif args.command == "ops":
        sys.exit(0 if check_ops(args.lib, args.run) else 1)
    elif args.command == "manifest":
        write_manifest(args)
    else:
        sys.exit(0 if verify(args.folder) else 1)


if __name__ == "__main__":
    main()
