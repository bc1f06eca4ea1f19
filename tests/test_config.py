"""Configuration: the option table, the file, the command line, and the one
clear line that every bad configuration gets."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tasd import config
from tasd.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = 'interface = "eth0"\naddress = "10.0.0.2/24"\n'


def load_text(tmp_path, text, overrides=None):
    p = tmp_path / "tasd.toml"
    p.write_text(text)
    return config.load(str(p), overrides)


def test_example_file_is_current_and_loads():
    """systemd/tasd.toml is generated from the option table; regenerate it with
    python -c 'from tasd import config; print(config.example_toml(), end="")' > systemd/tasd.toml"""
    example = ROOT / "systemd/tasd.toml"
    assert example.read_text() == config.example_toml()
    cfg = config.load(str(example))
    assert cfg["interface"] == "eth0" and cfg["backend"] == "xdp"


def test_help_and_example_list_every_option():
    out = subprocess.run([sys.executable, "-m", "tasd", "--help"], capture_output=True, text=True, check=True).stdout
    example = config.example_toml()
    for o in config.OPTIONS:
        assert f"  {o.key} " in out, f"--help does not document {o.key}"
        name = o.key.rpartition(".")[2]
        assert f"{name} = " in example, f"the example file does not show {o.key}"


def test_defaults(tmp_path):
    cfg = load_text(tmp_path, MINIMAL)
    assert cfg["cores"] == [0] and cfg["xdp.frames"] == 16384 and cfg["gateway"] is None
    assert str(cfg["address"].ip) == "10.0.0.2" and cfg["address"].network.prefixlen == 24


def test_sections(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + '[xdp]\nmode = "skb"\n[arp]\nretries = 2\n')
    assert cfg["xdp.mode"] == "skb" and cfg["arp.retries"] == 2


def test_command_line_overrides_file(tmp_path):
    cfg = load_text(tmp_path, MINIMAL, {"interface": "veth1", "cores": config.parse_cli_value("cores", "0,1")})
    assert cfg["interface"] == "veth1" and cfg["cores"] == [0, 1]


def test_command_line_only():
    cfg = config.load(None, {"interface": "eth1", "address": "192.168.5.9/16"})
    assert cfg["interface"] == "eth1"


@pytest.mark.parametrize("text, message", [
    (MINIMAL + "colour = 1\n", "unknown key 'colour'"),
    (MINIMAL + "[xdp]\nqueues = 2\n", "unknown key 'xdp.queues'"),
    (MINIMAL + "poll_us = \"fast\"\n", "poll_us: expected an integer"),
    (MINIMAL + "cores = \"0\"\n", "cores: expected a list"),
    (MINIMAL + "cores = [0, 0]\n", "names a CPU twice"),
    (MINIMAL + "cores = [4096]\n", "CPU 4096 is not available to tasd"),
    (MINIMAL + "cores = [0, 1]\n[xdp]\nframes = 2048\n", "xdp.frames: 2048 is too few for 2 worker"),
    (MINIMAL + "backend = \"dpdk\"\n", "backend: 'dpdk' is not one of"),
    (MINIMAL + "[xdp]\nframes = 1000\n", "xdp.frames: 1000 is not a power of two"),
    (MINIMAL + "[arp]\nprobe = 1\n", "arp.probe: expected true or false"),
    ('interface = "eth0"\naddress = "10.0.0.300/24"\n', "address: '10.0.0.300/24' is not an IPv4 address"),
    ('interface = "eth0"\naddress = "10.0.0.2"\n', "needs a prefix length"),
    ('interface = "eth0"\naddress = "10.0.0.255/24"\n', "cannot be a host address"),
    ('interface = "eth0"\naddress = "224.0.0.1/4"\n', "cannot be a host address"),
    (MINIMAL + 'gateway = "10.1.0.1"\n', "gateway: 10.1.0.1 is not inside 10.0.0.0/24"),
    (MINIMAL + 'gateway = "x"\n', "gateway: 'x' is not an IPv4 address"),
    ('interface = "a-very-long-interface-name"\naddress = "10.0.0.2/24"\n', "not a valid interface name"),
    ('address = "10.0.0.2/24"\n', "missing required key 'interface'"),
    (MINIMAL + 'mac = "02:00:00:00:00:01"\n', "only the TAP backend takes a MAC"),
    (MINIMAL + 'backend = "tap"\nmac = "01:00:00:00:00:01"\n', "not a unicast MAC"),
    (MINIMAL + 'control_socket = "tasd.sock"\n', "must be an absolute path"),
    (MINIMAL + "interface = [\n", "malformed TOML"),
])
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_text(tmp_path, text)


def run_tasd(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tasd", *map(str, args)], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("text", [
    MINIMAL + "colour = 1\n",           # unknown key
    MINIMAL + "poll_us = -1\n",         # wrong value
    MINIMAL + "cores = \"zero\"\n",     # wrong type
    'interface = "eth0"\naddress = "10.0.0.2/33"\n',  # bad address
    "interface = \n",                   # malformed
])
def test_bad_file_is_one_line_and_nonzero_exit(tmp_path, text):
    p = tmp_path / "tasd.toml"
    p.write_text(text)
    r = run_tasd("-c", p)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tasd: error: "), r.stderr


def test_missing_file_and_bad_cli_value(tmp_path):
    r = run_tasd("-c", tmp_path / "nope.toml")
    assert r.returncode == 2 and r.stderr.strip() == f"tasd: error: {tmp_path / 'nope.toml'}: no such file"
    r = run_tasd("--interface", "eth0", "--address", "10.0.0.2/24", "--cores", "a,b")
    assert r.returncode == 2 and "cores: 'a,b' is not a comma-separated list" in r.stderr
