"""`dcanas.profile` must not shadow the stdlib `profile` that cProfile and torch.export import."""
import subprocess
import sys


def test_cprofile_and_torch_export_after_import():
    code = (
        "import dcanas, dcanas.profile, cProfile, torch\n"
        "m = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())\n"
        "ep = torch.export.export(m, (torch.zeros(1, 1, 8, 8),))\n"
        "cProfile.run('1 + 1')\n"
        "print(type(ep).__name__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert r.returncode == 0, r.stderr
    assert "ExportedProgram" in r.stdout
