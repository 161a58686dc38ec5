"""The README's JupyterLab command starts a server whose default python3 kernel is the venv's python and
imports this checkout's diffprune_core. Only loopback traffic: the server listens on 127.0.0.1 and the test
talks to it through its REST API and one kernel websocket."""
import asyncio
import datetime
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
JUPYTER = VENV / "bin" / "jupyter"
README_COMMAND = ".venv/bin/jupyter lab --ip 127.0.0.1 --no-browser"
STARTUP_S = 60
REPLY_S = 60
CODE = "import diffprune_core, sys; print(diffprune_core.__file__, sys.executable)"
# bare names that jupyter_client replaces with the server's own sys.executable when it launches a kernel
BARE_PYTHONS = {"python", "python3", "python3.11"}
# Plain urllib, ignoring any http_proxy in the environment: every request goes straight to 127.0.0.1.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def test_readme_gives_the_jupyterlab_command():
    found = README_COMMAND in (ROOT / "README.md").read_text()
    assert found, f"README.md should give the command {README_COMMAND!r}"


def plain(text):
    """Kernel tracebacks without their terminal colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=40):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(no server log: {error})"


class Server:
    """`jupyter lab` from the venv, as the README starts it, in a throw-away home and runtime dir."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = self.tmp / "server.log"
        self.proc = None

    def env(self):
        dirs = {name: self.tmp / name for name in ("home", "runtime", "config", "data", "ipython")}
        for path in dirs.values():
            path.mkdir()
        # A stale user-level python3 kernel spec; JUPYTER_PATH must make the venv's spec win over it.
        decoy = dirs["data"] / "kernels" / "python3"
        decoy.mkdir(parents=True)
        (decoy / "kernel.json").write_text(json.dumps({
            "argv": ["/nonexistent/decoy/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "decoy", "language": "python"}))
        env = dict(os.environ)
        env.pop("JUPYTER_PREFER_ENV_PATH", None)
        env.update(
            JUPYTER_PATH=str(VENV / "share" / "jupyter"),  # as in the README
            HOME=str(dirs["home"]), JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), JUPYTER_CONFIG_DIR=str(dirs["config"]),
            JUPYTER_DATA_DIR=str(dirs["data"]), IPYTHONDIR=str(dirs["ipython"]), MPLCONFIGDIR=str(dirs["home"]),
        )
        return env

    def start(self):
        command = [str(JUPYTER), "lab", "--ip", "127.0.0.1", "--no-browser",
                   "--port", str(self.port), "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={ROOT}"]
        if os.geteuid() == 0:
            command.append("--allow-root")  # jupyter refuses to run as root without it (containers)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(command, cwd=ROOT, env=self.env(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited with {self.proc.returncode} before answering:\n"
                                     f"{tail(self.log)}")
            try:
                self.request("GET", "/api/status", timeout=2)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.25)
        raise AssertionError(f"jupyter lab did not answer /api/status within {STARTUP_S} s:\n{tail(self.log)}")

    def request(self, method, path, body=None, timeout=10):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with HTTP.open(request, timeout=timeout) as response:
            text = response.read().decode()
        return json.loads(text) if text else None

    def stop(self):
        """POST /api/shutdown, then SIGTERM, then SIGKILL; finally kill any kernel left with our runtime dir."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.request("POST", "/api/shutdown", timeout=5)
            except (OSError, urllib.error.URLError):
                pass
            for stop in (None, self.proc.terminate, self.proc.kill):
                if stop is not None:
                    stop()
                try:
                    self.proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Kernels run in their own sessions; any still alive has a connection file under our runtime dir.
        marker = str(self.tmp / "runtime")
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and int(proc.name) != os.getpid():
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                except OSError:
                    pass


def execute_request(code, session):
    msg_id = uuid.uuid4().hex
    return msg_id, {
        "header": {"msg_id": msg_id, "session": session, "msg_type": "execute_request", "version": "5.3",
                   "username": "test", "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }


async def run_code(url, code):
    """Send one execute_request over the kernel's websocket; return (execute_reply content, stdout, stderr)."""
    from tornado.websocket import websocket_connect

    connection = await asyncio.wait_for(websocket_connect(url), timeout=20)
    try:
        msg_id, message = execute_request(code, session=uuid.uuid4().hex)
        await connection.write_message(json.dumps(message))
        reply, idle, streams = None, False, {"stdout": [], "stderr": []}
        deadline = time.monotonic() + REPLY_S
        while reply is None or not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no execute_reply and idle status within {REPLY_S} s; so far: reply={reply}, "
                                     f"streams={streams}")
            raw = await asyncio.wait_for(connection.read_message(), timeout=left)
            if raw is None:
                raise AssertionError(f"the kernel websocket closed before the reply; streams={streams}")
            if isinstance(raw, bytes):
                continue  # binary frames carry buffers; an execute_request of plain code gets none
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["header"]["msg_type"], msg["content"]
            if kind == "execute_reply":
                reply = content
            elif kind == "stream":
                streams[content["name"]].append(content["text"])
            elif kind == "error":
                streams["stderr"].append("\n".join(content.get("traceback", [])))
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
        return reply, "".join(streams["stdout"]), "".join(streams["stderr"])
    finally:
        connection.close()


def test_jupyter_lab_runs_the_venv_kernel():
    assert JUPYTER.exists(), f"{JUPYTER} is missing: install requirements.txt into .venv (tools/setup.sh)"
    with tempfile.TemporaryDirectory(prefix="diffprune-jupyter-") as tmp:
        server = Server(tmp)
        try:
            server.start()
            try:
                specs = server.request("GET", "/api/kernelspecs")
                assert specs["default"] == "python3", specs
                spec = specs["kernelspecs"]["python3"]["spec"]
                argv0 = spec["argv"][0]
                # The venv ships kernels/python3/kernel.json with argv[0] "python", which jupyter_client runs as
                # the server's own interpreter (.venv/bin/python); an absolute argv[0] must be the venv's python.
                # Compare the folders, not fully resolved files: .venv/bin/python links to the base interpreter.
                assert argv0 in BARE_PYTHONS or Path(argv0).parent.resolve() == VENV_PYTHON.parent.resolve(), (
                    f"the python3 kernel spec is not the venv's: {spec}")

                kernel = server.request("POST", "/api/kernels", {"name": "python3"}, timeout=30)
                url = (f"ws://127.0.0.1:{server.port}/api/kernels/{kernel['id']}/channels"
                       f"?token={server.token}&session_id={uuid.uuid4().hex}")
                reply, stdout, stderr = asyncio.run(run_code(url, CODE))
                assert reply["status"] == "ok", (
                    f"{CODE!r} failed in the kernel: {reply.get('ename')}: {reply.get('evalue')}\n{plain(stderr)}")

                module_file = str(ROOT / "diffprune_core" / "__init__.py")
                assert stdout.startswith(module_file + " "), (
                    f"the kernel imported another diffprune_core than {module_file}: {stdout!r}")
                executable = Path(stdout[len(module_file) + 1:].strip())
                assert executable.parent.resolve() == VENV_PYTHON.parent.resolve() and \
                    executable.resolve() == VENV_PYTHON.resolve(), (
                        f"the kernel runs {executable}, not the venv's python {VENV_PYTHON}")

                server.request("DELETE", f"/api/kernels/{kernel['id']}", timeout=30)
                assert kernel["id"] not in {k["id"] for k in server.request("GET", "/api/kernels")}
            except urllib.error.HTTPError as error:
                raise AssertionError(f"{error.code} {error.reason} from {error.url}: {error.read()[:500]!r}\n"
                                     f"server log:\n{tail(server.log)}") from error
            except (AssertionError, OSError, asyncio.TimeoutError) as error:
                raise AssertionError(f"{error}\nserver log:\n{tail(server.log)}") from error
        finally:
            server.stop()
