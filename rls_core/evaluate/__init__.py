"""`rls evaluate`: regenerate the paper's tables and figures on held-out data.

Modules, one job each: `defaults` (settings, no heavy imports), `data` (held-out HR crops),
`degrade` (HR -> LR -> degraded LR), `run_methods` (every method on batches of LR crops,
cached), `measure` (the repository's HR CellProfiler pipeline on HR and SR crops), `stats`
(PSNR/SSIM/SWD, SVM accuracy, Cohen's d), `experiment` (the plan and the run), `tables`,
`figures`, `report`, `cli` (`add_arguments`, `run`: wired as `rls evaluate`).
"""
