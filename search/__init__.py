"""How we search. Every module, by role:

Commands (parse, call library code, print; each is `python -m search.<name>`):
    run          the search: `python -m search.run --budget 2GFLOPs`
    export       a study's best configs to JSON/YAML for any pipeline
    train        final training of an exported or scaled config
    scale        compound scaling of the search's pick to larger budgets
    fidelity     does the proxy's ranking survive longer training?

Running a search:
    run_flags    the search.run command line: every flag, default and help
    cli          the parser class of every command line: a usage error is one line
    settings     what defines a run: defaults, a preset, the flags (RunSettings)
    samplers     samplers and pruners by name, and their seeds
    asha         successive halving with late promotion; a candidate's trials (its lineage)
    chance       candidates at the chance loss; the rule that a rung ranking them cuts nobody
    plan         rung lengths, workers and expected time, from the budget and the clock
    plan_speed   the plan's throughput: a budget-sized model and a timed sample of the space
    parallelism  workers and torch threads by default (one 1-thread worker per core)
    study        opening a study (create or resume) and reading back what it was made with
    objective    one trial: suggest, price, reject or reuse, train rung by rung, record
    driver       the optimize loop until the study holds --trials trained candidates
    time_limit   --timeout inside a trial: a promotion starts only if its rung ends in time
    workers      local worker processes: start, watch, report
    ray_backend  the same worker loop placed on a Ray cluster
    interrupts   Ctrl-C, a terminated parent, orphaned workers
    progress     the progress bar
    summary      the end of a run: counts, top table, the pick
    hooks        entry points other packages plug in after a run (dashboards' note)

Study database and results:
    storage         URLs, opening and checking databases, atomic trial claims
    optuna_private  every use of Optuna's private API, pinned by a test
    results         counts, ranking and the top table, read from a study
    plateau         the pick: the seeded baseline when the ranking had no evidence, ties
    projection      the pick past the plateau: each top-rung loss projected one rung further
    budget          parsing and formatting FLOP figures and token counts

Scaling and fidelity (compound, compound_grid and fidelity_stats are pure functions):
    compound        EfficientNet compound scaling: coefficients, fitting a target
    compound_grid   the grid of coefficients worth training (EfficientNet step 1)
    grid_race       training the grid's points, tied leaders raced on from checkpoints
    scaled_study    the study `search.scale` writes
    scale_flags     the search.scale command line and the checks made before any work
    fidelity_stats  rank agreement between proxy and long runs
    fidelity_runs   search.fidelity's long runs: how each trains, is stored and reused
    retrain         training a study's configs again as it judged them (scale, benchmarks)

Final training (search.train's parts):
    train_input      reading and checking the config file, task, batch and --out folder
    resume_mismatch  naming the flags in which a --resume differs from its checkpoint
"""
