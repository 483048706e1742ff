"""Attacks on labkit, each performed with real clients and real engines (issue 26): a hostile
student, an untrusted lab file or bundle, a lying lab server. Each test shows the attack fails.
The shared default lab and the helpers are tests/labs.py's (a plugin named by tests/conftest.py)."""
import os

# commands without -f act on the shared default lab, as in tests/integration
os.environ.setdefault("LABKIT_LAB", "demo")
