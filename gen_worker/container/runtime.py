"""--container IMAGE: run every worker inside an Apptainer/Singularity or Docker/Podman image.

prepare() checks everything before a worker starts (runtime installed, image there, every path
visible inside) and returns a Container; Container.prefix() is the command that replaces
`python` in the worker's command line. Nothing here imports torch.
"""
import dataclasses
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Sequence

from gen_worker.container.binds import (Bind, BindError, check_binds, check_links, check_visible, parse_bind,
                                        plan_binds, to_container)
from gen_worker.errors import T2IError
from gen_worker.flags import flag
from gen_worker.spec import JobSpec

RUNTIMES = ("apptainer", "singularity", "docker", "podman")
# SLURM's Pyxis plugin: srun itself starts the container, with Enroot (container/pyxis.py); nothing to install here.
PYXIS = "pyxis"
APPTAINER_URIS = ("docker://", "docker-archive://", "docker-daemon://", "library://", "oras://", "shub://")
IMAGE_WORKDIR = "/opt/t2i-batch"  # where the recipe installs the project (containers/Dockerfile)
# Passed by name only (docker/podman): a token never shows in `ps`, an unset one stays unset.
PASSED_ENV = ("HF_HUB_OFFLINE", "HF_TOKEN", "HF_ENDPOINT", "TRANSFORMERS_OFFLINE")


class ContainerError(T2IError):
    pass


@dataclass
class ContainerOptions:
    container: Optional[str] = flag(None, group="container", metavar="IMAGE",
                                    help="image to run the workers in: an Apptainer .sif file or a docker/podman "
                                         "image (e.g. t2i-batch:latest, built by containers/build_image.sh); "
                                         "default: no container")
    container_runtime: str = flag("auto", group="container", choices=("auto", *RUNTIMES, PYXIS),
                                  help="auto: apptainer (or singularity) for a .sif file, else podman if installed, "
                                       "else docker; pyxis (--cluster slurm only): srun --container-image, for a "
                                       "registry image (nvcr.io#nvidia/pytorch:24.05-py3), an Enroot .sqsh file "
                                       "or an image already on the nodes (docs/containers.md)")
    container_bind: List[str] = flag(group="container", repeatable=True, metavar="SRC[:DST]",
                                     help="one more host path to show inside the container (repeatable); the output "
                                          "dir, the prompts CSV, the model folder and the Hugging Face cache are "
                                          "bound at their own paths, a bind that covers one of them with another "
                                          "DST moves it there")


def is_apptainer(runtime: str) -> bool:
    return runtime in ("apptainer", "singularity")


def choose_runtime(image: str, runtime: str = "auto", which: Callable[[str], str | None] = shutil.which) -> str:
    """The runtime asked for, or a guess: a .sif, an existing file or an apptainer URI means
    apptainer (singularity if only that is installed); a registry name means podman, else docker."""
    if runtime != "auto":
        return runtime
    if image.endswith(".sif") or image.startswith(APPTAINER_URIS) or os.path.exists(image):
        return "singularity" if which("singularity") and not which("apptainer") else "apptainer"
    return "docker" if which("docker") and not which("podman") else "podman"


def check_cluster(runtime: str, cluster: str) -> None:
    if runtime == PYXIS and cluster != "slurm":
        raise ContainerError("--container_runtime pyxis starts the image through srun (SLURM's Pyxis plugin): "
                             "use it with --cluster slurm, or another runtime for local runs")


def check_runtime(runtime: str, image: str, cluster: str, which: Callable[[str], str | None] = shutil.which,
                  run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> None:
    """Clear errors before anything starts: runtime missing, image file missing or not pulled."""
    check_cluster(runtime, cluster)
    if runtime == PYXIS:
        if image.endswith(".sqsh") and not os.path.isfile(image):
            raise ContainerError(f"--container {image}: no such squashfs file (make one with enroot import, "
                                 "docs/containers.md)")
        return
    if not which(runtime):
        other = [r for r in RUNTIMES if r != runtime and which(r)]
        hint = f"; installed: {', '.join(other)} (see --container_runtime)" if other else ""
        raise ContainerError(f"--container: {runtime} is not installed here (not on PATH){hint}")
    if is_apptainer(runtime):
        if not image.startswith(APPTAINER_URIS) and not os.path.exists(image):
            raise ContainerError(f"--container {image}: no such image file")
        return
    if image.endswith(".sif"):
        raise ContainerError(f"--container {image}: a .sif image needs --container_runtime apptainer or singularity")
    if cluster != "local":
        return  # SLURM nodes may pull it themselves: their store is not this host's
    try:
        found = run([runtime, "image", "inspect", "--format", "{{.Id}}", image],
                    capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ContainerError(f"--container: `{runtime} image inspect` failed: {err}") from None
    if found.returncode != 0:
        why = " ".join(found.stderr.split())[:300]
        if "no such" in why.lower() or "not known" in why.lower() or "failed to find" in why.lower():
            raise ContainerError(f"--container {image}: no such image in {runtime}'s local store; build it "
                                 f"(containers/build_image.sh) or pull it ({runtime} pull {image})")
        raise ContainerError(f"--container: {runtime} does not answer: {why}")


def _hf_cache_dirs(model_is_hub: bool) -> dict[str, str]:
    """HF_HOME (default ~/.cache/huggingface) and HF_HUB_CACHE if set elsewhere: {env name: host path}."""
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    dirs = {"HF_HOME": os.path.abspath(home)}
    if os.environ.get("HF_HUB_CACHE"):
        dirs["HF_HUB_CACHE"] = os.path.abspath(os.environ["HF_HUB_CACHE"])
    if model_is_hub:  # downloads must land on the host, not in the container's throw-away /tmp
        for path in dirs.values():
            os.makedirs(path, exist_ok=True)
    return {name: path for name, path in dirs.items() if os.path.isdir(path)}


@dataclass
class Container:
    runtime: str
    image: str
    binds: list[Bind]
    env: dict[str, str] = field(default_factory=dict)  # set inside every container (paths already translated)
    gpus: bool = True  # give each worker its GPU (False for --device cpu)
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    pull: bool = False  # docker/podman: may pull a missing image (SLURM nodes); local runs were checked

    def path(self, host_path: str) -> str:
        """The path the worker is given for a host path (the same unless a --container_bind moved it)."""
        return to_container(host_path, self.binds) or host_path

    def inside_spec(self, spec: JobSpec) -> JobSpec:
        """The JobSpec as the worker inside must see it: every path translated."""
        model = self.path(spec.model_path) if os.path.isabs(spec.model_path) else spec.model_path
        return dataclasses.replace(spec, prompts_csv=self.path(spec.prompts_csv),
                                   output_dir=self.path(spec.output_dir), model_path=model)

    def new_name(self, worker_index: int) -> str:
        return f"t2i-batch-{os.getpid()}-{worker_index}-{uuid.uuid4().hex[:6]}"

    def prefix(self, gpu: str, name: str | None, label: str | None = None, visible: str | None = None) -> list[str]:
        """The command that runs `python` for one worker given host GPU `gpu` ("" for none);
        `visible`: its CUDA_VISIBLE_DEVICES outside, when not the host's index (SLURM cgroups);
        `name`: the docker/podman container's (apptainer has none)."""
        env = dict(self.env, T2I_CONTAINER=self.image, T2I_HOST_GPU=gpu)
        if is_apptainer(self.runtime):
            return self._apptainer(gpu if visible is None else visible, env)
        return self._docker(gpu, gpu if visible is None else visible, env, name, label)

    def _apptainer(self, visible: str, env: dict[str, str]) -> list[str]:
        # GPUs: --nv shows every GPU, CUDA_VISIBLE_DEVICES (same ids as outside) picks this one.
        # --pwd: `python -m gen_worker.worker` must import the image's project, not a checkout in the cwd.
        argv = [self.runtime, "exec", *(["--nv"] if self.gpus else []), "--pwd", IMAGE_WORKDIR]
        binds = [b.src if b.src == b.dst else f"{b.src}:{b.dst}" for b in self.binds]
        if binds:
            argv += ["--bind", ",".join(binds)]
        env["CUDA_VISIBLE_DEVICES"] = visible
        argv += [f"--env={k}={v}" for k, v in env.items()]
        return argv + [self.image, "python"]

    def _docker(self, gpu: str, visible: str, env: dict[str, str], name: str | None, label: str | None) -> list[str]:
        argv = [self.runtime, "run", "--rm", "--init", *(["--name", name] if name else []), "--network", "host",
                *([] if self.pull else ["--pull", "never"]), "--user", f"{self.uid}:{self.gid}"]
        if self.runtime == "podman" and os.geteuid() != 0:
            argv.append("--userns=keep-id")  # rootless: else --user maps to a sub-uid and files are not yours
        argv += ["--security-opt", "label=disable"]  # SELinux would refuse the binds
        if label:
            argv += ["--label", f"t2i-batch.output_dir={label}"]
        for b in self.binds:
            argv += ["-v", f"{b.src}:{b.dst}"]
        if self.gpus and gpu:
            # Only this GPU is in the container, renumbered 0; T2I_HOST_GPU keeps the host's id.
            env["CUDA_VISIBLE_DEVICES"] = "0"
            gpu_flags = ["--gpus", f"device={gpu}"] if self.runtime == "docker" else [
                "--device", f"nvidia.com/gpu={gpu}", "-e", f"NVIDIA_VISIBLE_DEVICES={gpu}"]
        else:
            env["CUDA_VISIBLE_DEVICES"] = visible
            gpu_flags = []
        for k, v in env.items():
            argv += ["-e", f"{k}={v}"]
        for k in PASSED_ENV:
            argv += ["-e", k]
        return argv + gpu_flags + [self.image, "python"]

    def remove_command(self, names: Sequence[str]) -> list[str] | None:
        """Force-remove containers left running (their `run` client was killed)."""
        if is_apptainer(self.runtime) or not names:
            return None
        # podman's rm -f first waits 10 s for SIGTERM; SLURM's KillWait may be shorter: kill at once.
        return [self.runtime, "rm", "-f", *(["--time", "0", "--ignore"] if self.runtime == "podman" else []), *names]


def prepare(image: str, runtime: str, bind_args: Iterable[str] | None, spec: JobSpec, cluster: str = "local",
            same_path: Sequence[str] = ()) -> Container:
    """Check the runtime, the image and the paths; the Container the workers run in. ContainerError.
    `same_path`: folders that must be seen at their own path inside (submitit's: its sbatch script
    names it), whatever --container_bind moves."""
    runtime = choose_runtime(image, runtime)
    check_runtime(runtime, image, cluster)
    if runtime == PYXIS and image.endswith(".sqsh"):
        image = os.path.abspath(image)  # srun runs in the checkout's folder on the nodes
    try:
        user = [parse_bind(text) for text in bind_args or ()]
        for path in same_path:
            os.makedirs(path, exist_ok=True)
            if to_container(path, user) not in (None, path):
                user.insert(0, Bind(path, path))
        model_dir = spec.model_path if os.path.isabs(spec.model_path) else None
        needed = [spec.output_dir, spec.prompts_csv, *([model_dir] if model_dir else []), *same_path]
        caches = _hf_cache_dirs(model_is_hub=model_dir is None)
        binds = plan_binds(needed + list(caches.values()), user)
        check_binds(binds)
        for path in needed + list(caches.values()):
            check_visible(path, binds)
        if model_dir:
            check_links(model_dir, binds)
    except BindError as err:
        raise ContainerError(str(err)) from None
    env = {name: to_container(path, binds) or path for name, path in caches.items()}  # visible: checked above
    return Container(runtime, image, binds, env, gpus=spec.device != "cpu", pull=cluster != "local")
