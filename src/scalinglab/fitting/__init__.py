"""The law library: pure fits on tables (Chinchilla Methods 1-3, power laws, hyperparameter
laws, schedule laws) with their bootstrap intervals. Nothing here knows about a study.

Pure numpy/scipy: every function takes plain arrays and returns a small frozen dataclass. The CLI
(`scalinglab fit ...`), the workflow's fit rules and the paper figures all call these. One module
per method: `parametric` (Method 3), `isoflop` (Method 2), `envelope` (Method 1), `powerlaw`,
`hparam_laws`, and the schedule laws in two (`schedule_law`: the forms and their evaluation;
`schedule_fit`: fit and bootstrap). Beside them what the methods share: `allocation` (N_opt and
D_opt against C, Methods 1 and 2), `bootstrap` (replicates, intervals, BLAS threads) and `inputs`
(`FitError`, the checks of the arrays, C = 6ND)."""
