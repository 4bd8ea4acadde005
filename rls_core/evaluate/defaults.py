"""Default settings shared by the CLI and the library, importable without torch (so that
`rls --help` stays instant)."""
from __future__ import annotations

#: simulator seed of the held-out fields (training used 1000 / 2000; the reference set uses seed + 1)
DEFAULT_SEED = 9000
#: condition from a field name like translocation_DMSO_B02_s1 (the simulator's and pipelines' convention)
DEFAULT_CONDITION_REGEX = r"^[A-Za-z0-9]+_(?P<Condition>[A-Za-z0-9]+)_"
#: the robustness grid of Fig. 6 (the paper: noise sigma ~0.1, salt-and-pepper ~0.05, blur)
ROBUSTNESS = ("noise:0.05", "noise:0.1", "saltpepper:0.02", "saltpepper:0.05", "blur:0.5", "blur:1.0")
#: Table 1 and Fig. 5: the paper's methods (its column order), and the --quick subset
TABLE1_METHODS = ("bicubic", "plain", "pulse", "brgm", "rls")
QUICK_TABLE1_METHODS = ("bicubic", "plain", "rls")
#: Fig. 7: w/o Regu., w/o p_w, w/o p_cross, full RLS
ABLATION = ("plain", "rls-no-pw", "rls-no-pcross", "rls")
SECTIONS = ("table1", "biology", "robustness", "ablation", "samples", "realism")
