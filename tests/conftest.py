import sys
from pathlib import Path

# tests/stack.py is shared by the tests, the benchmarks and the local demo.
sys.path.insert(0, str(Path(__file__).parent))
