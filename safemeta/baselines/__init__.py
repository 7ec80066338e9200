"""The paper's baselines (SPEC §3), each the `MetaLearner` base with its own two steps:
`maml_lag`, `meta_cpo`, `meta_crpo` (meta-learned), `cpo`, `ppo_lag` (from scratch on
each test task). Every one runs with the same tasks, budgets, networks and critics as
`safemeta` (the base's presets)."""
