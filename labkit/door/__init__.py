"""The students' door: `labkit serve` (the SSH gate and the HTTPS page over one Door)."""
import warnings

# asyncssh still names DSA, which cryptography deprecates; the door never offers or accepts it
warnings.filterwarnings("ignore", message="DSA is deprecated", module="asyncssh")
