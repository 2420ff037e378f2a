"""The tables, views and migrations of the project's one DuckDB file (`Store` opens and migrates it).

Everything the tool produces (models, circuits, nodes, edges, activation records, explanations,
scores) lives in a single DuckDB database, `circuits.duckdb` by default (see `resolve_db_path`).
DuckDB lets one process write a file at a time; a second writer gets a `UserError`.

Tables
------
schema_version(version INTEGER, applied_at TIMESTAMP)
    One row per applied migration. The highest `version` is the schema of the file.
models (migration 1)
    name VARCHAR PRIMARY KEY, config JSON, corpus_manifest JSON, n_params BIGINT,
    n_nonzero BIGINT, density JSON (matrix name -> fraction of nonzero weights),
    train_loss DOUBLE, val_loss DOUBLE, tokens_seen BIGINT, steps BIGINT,
    checkpoint_path VARCHAR, run_dir VARCHAR, created_at TIMESTAMP, updated_at TIMESTAMP
    (timestamps are UTC and set by `Store.upsert_model`).
tasks, task_evals, nodes, circuits, circuit_nodes, edges, view circuit_summary (migration 2)
    Task definitions and the full model's loss on them; every node of a model; pruned circuits
    with their nodes and edges (see the SQL in `MIGRATIONS`). A node row: node_id
    ('demo/L1.mlp.neuron[37]'), model, layer, location ('L1.mlp.neuron'; before migration 5 it
    held the layer-free part), site ('mlp.neuron', migration 5), idx, name ('L1.mlp.neuron[37]'), mean.
activation_records (migration 3)
    node_id, model, sampling (top | random | quantile; `kind` before migration 5), rank, split
    (explain | score | calibrate | holdout), start (window offset in the validation tokens),
    max_activation, tokens VARCHAR[], activations DOUBLE[], sample_seed, created_at;
    PRIMARY KEY (node_id, sampling, rank).
explanations (migration 3)
    explanation_id PRIMARY KEY, node_id, model, kind (llm | token_lookup | shuffled), text (NULL when
    none was usable, see failure), candidate (index among best-of-k), selected (picked on the
    calibrate split; true for baselines), source_node_id (shuffled: whose explanation),
    explainer, explain_prompt, simulator, simulate_prompt (prompt versions), settings_key (hash
    of the settings that change the result; reruns skip done work by it), settings JSON,
    calibration_slope, calibration_intercept, failure, raw_text (unusable LLM output),
    purpose ('circuit' | 'eval'), created_at.
simulations (migration 3)
    explanation_id, node_id, sampling, rank (the activation record simulated), split, predicted
    DOUBLE[] (NULL on failure), simulator, failure, raw_text; PRIMARY KEY (explanation_id, sampling, rank).
scores (migration 3)
    explanation_id, split (score: the held-out score | calibrate: best-of-k selection), method
    (correlation | mean_window_correlation | r_squared | absolute_deviation_explained), value
    (NULL when undefined, never NaN), n_tokens; PRIMARY KEY (explanation_id, split, method).
node_scores (view, migration 3)
    One row per selected explanation and per task with a circuit containing its node (task NULL
    for nodes in no circuit): model, task, node_id, name, layer, location, site, kind, explanation,
    explainer, simulator, score (correlation on split 'score'), mean_window_correlation,
    r_squared, absolute_deviation_explained, calibrate_score (correlation on 'calibrate'),
    failure, purpose, settings_key, explanation_id, created_at.
jobs (migration 4)
    job_id PRIMARY KEY, command, model, backend, llm_model, base_url, settings_key, status
    (running | finished | interrupted | failed), pid, error, started_at, finished_at.
llm_requests (migration 4)
    One row per LLM request a job made (or took from the cache): job_id, seq, explanation_id,
    node_id, method (chat | prompt_logprobs), cache_hit, prompt_tokens, completion_tokens,
    tokens_estimated (the server gave no usage: about 4 characters per token), seconds, attempts,
    status (ok | error), error, cost (NULL without a price table), created_at.
llm_cache (migration 4)
    key PRIMARY KEY (sha256 of endpoint, model, method and the full request; never the API key),
    endpoint, model, method, response JSON, cache_version, created_at.
explanations.job_id (migration 4): the job that wrote the row.
job_summary (view, migration 4)
    One row per job with nodes done, failures, requests, cache hits, tokens, cost and seconds,
    computed from the rows the job wrote, so a killed job is counted too.
migration 5: one name per concept. activation_records.kind and simulations.kind become
    `sampling`; nodes.location becomes `site` and a new `location` holds the full location;
    node_scores gains `site` and its `validation_score` is now `calibrate_score`.
simulator_calibration (migration 6)
    What a correct explanation scores under a simulator: one row per simulator version, rule
    family (token/syntax, meaning), rule set (training, held_out), suite version and run, written
    by `circuits eval`: rules, seeds, AUROC, the correct explanations' mean score (mean and std
    over seeds) and token lookup's. The view score_calibration puts those numbers (held-out rules,
    newest measurement) beside every explanation scored by that simulator version.

circuits.selected_nodes, grown_nodes, note (migration 7)
    The size bisection chose on the selection pairs, the nodes added so that the held-out pairs
    meet the target, and why a circuit is not sufficient (NULL when it is).
explanation_embeddings (migration 8)
    explanation_id PRIMARY KEY, embedder (the sentence-embedding model, 'all-MiniLM-L6-v2'),
    embedding FLOAT[384] (unit length), created_at. One row per searchable explanation (kind llm,
    selected, purpose 'circuit', with text), for `circuits search`; written with the explanation by
    the explain job, backfilled by `circuits search` for older rows, and deleted when its
    explanation is replaced. A side table, not a column of `explanations`: every `SELECT *` of
    explanations (the jobs, the report, exports, users' SQL) stays free of 384 floats per row, and
    failures without text simply have no row.
explanations.writer (migration 9)
    Who wrote the text: 'llm' (the explainer LLM), 'token_list', 'lexer' or 'lexer+token_list'
    (`explainer.writers`, without an LLM), 'token_lookup' for that baseline; a shuffled row has its
    source's writer; NULL for the suite's hand-written rows (correct, wrong). A node's best-of-k
    pool (kind 'llm') holds every writer's candidates; `selected` marks the one picked on the
    calibrate split, and the best LLM-written one also has a score on the score split.
    node_scores gains `writer`.
circuits.baseline_nodes, search_points, search_seconds; prune_points (migration 10)
    Pruning that searches (`sparse_model.prune_search`). A circuit's status may now be
    'no_small_circuit': the smallest sufficient set keeps more than a quarter of the model's nodes,
    or more than half of what a random ranking needs (`baseline_nodes`, the median over three random
    orders of the size that meets the same target); its `note` says which. `search_points` and
    `search_seconds`: how many settings the search tried and how long it took (NULL for one run).
    prune_points: one row per tried setting, (circuit_id, point) the key: overrides (JSON, what it
    changed of the base settings), settings (JSON, all of them), nodes, edges, selection_loss,
    sufficiency_loss (held-out), sufficient, seconds, chosen (the one the circuit is).
    The view circuit_summary gains status-relevant columns: baseline_nodes, n_candidates, note.
jobs.concurrency (migration 11)
    The number of requests in flight the job's adaptive limit settled at (`explainer.llm.limit`:
    it starts at 1, grows while answers come back well within the timeout, halves on a slow
    answer, a timeout, a 429 or a 5xx; `--concurrency` is its ceiling). job_summary shows it.
task_records, node_effects, circuits.effects, explanations.task, view node_roles (migration 12)
    Node roles (`circuits explain --in-task`; docs/method.md, "Node roles"): in-task records per
    (node, task, rank = 2 * pair + variant); per (circuit, node) its effect when ablated from the
    circuit and from the model, direct effect and promoted/suppressed tokens; the baselines in
    circuits.effects; in-task explanations are purpose 'task' with `task` set; node_roles joins them.
node_scores gains detection, fuzzing, detection_auroc, fuzzing_auroc (migration 13)
    The excerpt scorers' held-out scores of an explanation (`explainer.excerpt_scorers`).

Adding a migration
------------------
Append `(next_version, "SQL script")` to `MIGRATIONS` below, where `next_version` is the last
version plus one; never edit or reorder an entry that has been committed, because existing files
have already applied it. A script may hold several `;`-separated statements; each migration runs
in its own transaction together with its `schema_version` row, so it is applied fully or not at
all. Add the new tables to the list above. JSON columns come back from `Store` as Python objects.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE models (
            name VARCHAR PRIMARY KEY,
            config JSON,
            corpus_manifest JSON,
            n_params BIGINT,
            n_nonzero BIGINT,
            density JSON,
            train_loss DOUBLE,
            val_loss DOUBLE,
            tokens_seen BIGINT,
            steps BIGINT,
            checkpoint_path VARCHAR,
            run_dir VARCHAR,
            created_at TIMESTAMP,
            updated_at TIMESTAMP
        );
        """,
    ),
    (
        2,
        """
        CREATE TABLE tasks (
            name VARCHAR PRIMARY KEY,
            description VARCHAR,
            answers JSON,
            random_labels BOOLEAN,
            updated_at TIMESTAMP
        );
        CREATE TABLE task_evals (
            model VARCHAR,
            task VARCHAR,
            loss DOUBLE,
            accuracy DOUBLE,
            mean_logit_diff DOUBLE,
            n_val INTEGER,
            learned BOOLEAN,
            target_loss DOUBLE,
            created_at TIMESTAMP,
            PRIMARY KEY (model, task)
        );
        CREATE TABLE nodes (
            node_id VARCHAR PRIMARY KEY,
            model VARCHAR,
            layer INTEGER,
            location VARCHAR,
            idx INTEGER,
            name VARCHAR,
            mean DOUBLE
        );
        CREATE INDEX nodes_model ON nodes (model);
        CREATE TABLE circuits (
            circuit_id VARCHAR PRIMARY KEY,
            model VARCHAR,
            task VARCHAR,
            status VARCHAR,
            target_loss DOUBLE,
            full_loss DOUBLE,
            full_accuracy DOUBLE,
            selection_loss DOUBLE,
            sufficiency_loss DOUBLE,
            sufficiency_accuracy DOUBLE,
            necessity_loss DOUBLE,
            sufficient BOOLEAN,
            n_nodes INTEGER,
            n_edges INTEGER,
            n_candidates INTEGER,
            settings JSON,
            settings_digest VARCHAR,
            seconds DOUBLE,
            created_at TIMESTAMP
        );
        CREATE TABLE circuit_nodes (
            circuit_id VARCHAR,
            node_id VARCHAR,
            rank INTEGER,
            score DOUBLE,
            PRIMARY KEY (circuit_id, node_id)
        );
        CREATE TABLE edges (
            circuit_id VARCHAR,
            source VARCHAR,
            target VARCHAR,
            weight DOUBLE,
            kind VARCHAR
        );
        CREATE INDEX edges_circuit ON edges (circuit_id);
        CREATE VIEW circuit_summary AS
            SELECT c.model, c.task, c.status, c.n_nodes, c.n_edges, c.full_loss, c.sufficiency_loss,
                   c.necessity_loss, c.sufficient, c.target_loss, t.random_labels, c.circuit_id
            FROM circuits c LEFT JOIN tasks t ON t.name = c.task;
        """,
    ),
    (
        3,
        """
        CREATE TABLE activation_records (
            node_id VARCHAR,          -- nodes.node_id, e.g. 'demo/L1.mlp.neuron[37]'
            model VARCHAR,
            kind VARCHAR,             -- top | random | quantile
            rank INTEGER,
            split VARCHAR,            -- explain | score | calibrate | holdout
            start BIGINT,             -- offset of the window in the validation token array
            max_activation DOUBLE,
            tokens VARCHAR[],
            activations DOUBLE[],
            sample_seed INTEGER,
            created_at TIMESTAMP,
            PRIMARY KEY (node_id, kind, rank)
        );
        CREATE TABLE explanations (
            explanation_id VARCHAR PRIMARY KEY,
            node_id VARCHAR,
            model VARCHAR,
            kind VARCHAR,             -- llm | token_lookup | shuffled
            text VARCHAR,             -- NULL when no usable explanation was produced (see failure)
            candidate INTEGER,        -- index among the best-of-k candidates (0 for baselines)
            selected BOOLEAN,         -- the candidate picked on the calibrate (validation) split; true for baselines
            source_node_id VARCHAR,   -- shuffled: the node whose explanation this is; else NULL
            explainer VARCHAR,        -- e.g. 'local:SmolLM2-135M-Instruct', 'openai:gpt-4o-mini', 'token_lookup'
            explain_prompt VARCHAR,   -- prompt version (content hash); NULL for token_lookup
            simulator VARCHAR,        -- all_at_once | chat_logprobs | text | token_lookup
            simulate_prompt VARCHAR,  -- prompt version; NULL for token_lookup
            settings_key VARCHAR,     -- hash of every setting that changes the result; reruns skip done work by it
            settings JSON,
            calibration_slope DOUBLE,
            calibration_intercept DOUBLE,
            failure VARCHAR,          -- why this explanation has no score, if it has none
            raw_text VARCHAR,         -- the LLM's raw output when it could not be used
            purpose VARCHAR DEFAULT 'circuit',  -- 'circuit' for real jobs, 'eval' for the ground-truth suite
            created_at TIMESTAMP
        );
        CREATE INDEX explanations_node ON explanations (node_id);
        CREATE TABLE simulations (
            explanation_id VARCHAR,
            node_id VARCHAR,
            kind VARCHAR,             -- the activation record simulated: (node_id, kind, rank)
            rank INTEGER,
            split VARCHAR,
            predicted DOUBLE[],       -- NULL on failure
            simulator VARCHAR,
            failure VARCHAR,          -- NULL if the simulation succeeded
            raw_text VARCHAR,         -- raw LLM output kept when it failed to parse
            PRIMARY KEY (explanation_id, kind, rank)
        );
        CREATE TABLE scores (
            explanation_id VARCHAR,
            split VARCHAR,            -- score (the held-out test split) | calibrate (validation, used to pick best-of-k)
            method VARCHAR,           -- correlation | mean_window_correlation | r_squared | absolute_deviation_explained
            value DOUBLE,             -- NULL when undefined (e.g. a constant vector), never 0 for undefined
            n_tokens INTEGER,
            PRIMARY KEY (explanation_id, split, method)
        );
        CREATE VIEW node_scores AS
            WITH s AS (
                SELECT explanation_id,
                       max(value) FILTER (WHERE split = 'score' AND method = 'correlation') AS score,
                       max(value) FILTER (WHERE split = 'score' AND method = 'mean_window_correlation')
                           AS mean_window_correlation,
                       max(value) FILTER (WHERE split = 'score' AND method = 'r_squared') AS r_squared,
                       max(value) FILTER (WHERE split = 'score' AND method = 'absolute_deviation_explained')
                           AS absolute_deviation_explained,
                       max(value) FILTER (WHERE split = 'calibrate' AND method = 'correlation')
                           AS validation_score
                FROM scores GROUP BY explanation_id
            ), cc AS (
                SELECT DISTINCT cn.node_id, c.task  -- a node pruned for a task several times: one row
                FROM circuit_nodes cn JOIN circuits c ON c.circuit_id = cn.circuit_id
            )
            SELECT e.model, cc.task, e.node_id, n.name, n.layer, n.location, e.kind,
                   e.text AS explanation, e.explainer, e.simulator, s.score, s.mean_window_correlation,
                   s.r_squared, s.absolute_deviation_explained, s.validation_score, e.failure,
                   e.purpose, e.settings_key, e.explanation_id, e.created_at
            FROM explanations e
            LEFT JOIN nodes n ON n.node_id = e.node_id
            LEFT JOIN cc ON cc.node_id = e.node_id
            LEFT JOIN s ON s.explanation_id = e.explanation_id
            WHERE e.selected;
        """,
    ),
    (
        4,
        """
        CREATE TABLE jobs (
            job_id VARCHAR PRIMARY KEY,
            command VARCHAR,
            model VARCHAR,
            backend VARCHAR,
            llm_model VARCHAR,
            base_url VARCHAR,
            settings_key VARCHAR,
            status VARCHAR,
            pid INTEGER,
            error VARCHAR,
            started_at TIMESTAMP,
            finished_at TIMESTAMP
        );
        CREATE TABLE llm_requests (
            job_id VARCHAR,
            seq INTEGER,
            explanation_id VARCHAR,
            node_id VARCHAR,
            method VARCHAR,
            cache_hit BOOLEAN,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            tokens_estimated BOOLEAN,
            seconds DOUBLE,
            attempts INTEGER,
            status VARCHAR,
            error VARCHAR,
            cost DOUBLE,
            created_at TIMESTAMP
        );
        CREATE INDEX llm_requests_job ON llm_requests (job_id);
        CREATE TABLE llm_cache (
            key VARCHAR PRIMARY KEY,
            endpoint VARCHAR,
            model VARCHAR,
            method VARCHAR,
            response JSON,
            cache_version INTEGER,
            created_at TIMESTAMP
        );
        ALTER TABLE explanations ADD COLUMN job_id VARCHAR;
        CREATE VIEW job_summary AS
            WITH r AS (
                SELECT job_id, count(*) AS requests, count(*) FILTER (WHERE cache_hit) AS cache_hits,
                       count(*) FILTER (WHERE status <> 'ok') AS request_errors,
                       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
                       sum(cost) AS cost, max(created_at) AS last_request
                FROM llm_requests GROUP BY job_id
            ), e AS (
                SELECT job_id, count(DISTINCT node_id) AS nodes_done,
                       count(DISTINCT node_id) FILTER (WHERE failure IS NOT NULL OR text IS NULL) AS failures
                FROM explanations WHERE kind = 'llm' AND selected GROUP BY job_id
            )
            SELECT j.job_id, j.started_at, j.status, j.model, j.backend, j.llm_model,
                   coalesce(e.nodes_done, 0) AS nodes_done, coalesce(e.failures, 0) AS failures,
                   coalesce(r.requests, 0) AS requests, coalesce(r.cache_hits, 0) AS cache_hits,
                   coalesce(r.request_errors, 0) AS request_errors,
                   coalesce(r.prompt_tokens, 0) AS prompt_tokens, coalesce(r.completion_tokens, 0) AS completion_tokens,
                   r.cost,
                   date_diff('millisecond', j.started_at, coalesce(j.finished_at, r.last_request, j.started_at)) / 1000.0
                       AS seconds,
                   j.settings_key, j.error, j.pid, j.command
            FROM jobs j LEFT JOIN r USING (job_id) LEFT JOIN e USING (job_id);
        """,
    ),
    (
        5,
        """
        -- One name per concept: a record's `kind` (top | random | quantile) is its `sampling`
        -- (explanations.kind stays the explanation kind); nodes.location is the full location
        -- ('L1.mlp.neuron', as in node names) and the layer-free part is `site`; the calibrate
        -- split's correlation in node_scores is `calibrate_score`.
        DROP VIEW node_scores;
        DROP INDEX nodes_model;
        ALTER TABLE nodes RENAME COLUMN location TO site;
        ALTER TABLE nodes ADD COLUMN location VARCHAR;
        UPDATE nodes SET location = CASE WHEN site LIKE 'final%' THEN site ELSE 'L' || layer || '.' || site END;
        CREATE INDEX nodes_model ON nodes (model);
        ALTER TABLE activation_records RENAME COLUMN kind TO sampling;
        ALTER TABLE simulations RENAME COLUMN kind TO sampling;
        CREATE VIEW node_scores AS
            WITH s AS (
                SELECT explanation_id,
                       max(value) FILTER (WHERE split = 'score' AND method = 'correlation') AS score,
                       max(value) FILTER (WHERE split = 'score' AND method = 'mean_window_correlation')
                           AS mean_window_correlation,
                       max(value) FILTER (WHERE split = 'score' AND method = 'r_squared') AS r_squared,
                       max(value) FILTER (WHERE split = 'score' AND method = 'absolute_deviation_explained')
                           AS absolute_deviation_explained,
                       max(value) FILTER (WHERE split = 'calibrate' AND method = 'correlation')
                           AS calibrate_score
                FROM scores GROUP BY explanation_id
            ), cc AS (
                SELECT DISTINCT cn.node_id, c.task  -- a node pruned for a task several times: one row
                FROM circuit_nodes cn JOIN circuits c ON c.circuit_id = cn.circuit_id
            )
            SELECT e.model, cc.task, e.node_id, n.name, n.layer, n.location, n.site, e.kind,
                   e.text AS explanation, e.explainer, e.simulator, s.score, s.mean_window_correlation,
                   s.r_squared, s.absolute_deviation_explained, s.calibrate_score, e.failure,
                   e.purpose, e.settings_key, e.explanation_id, e.created_at
            FROM explanations e
            LEFT JOIN nodes n ON n.node_id = e.node_id
            LEFT JOIN cc ON cc.node_id = e.node_id
            LEFT JOIN s ON s.explanation_id = e.explanation_id
            WHERE e.selected;
        """,
    ),
    (
        6,
        """
        CREATE TABLE simulator_calibration (
            simulator_version VARCHAR NOT NULL,  -- explanations.simulate_prompt of what it calibrates
            simulator VARCHAR NOT NULL,
            family VARCHAR NOT NULL,  -- token/syntax | meaning
            rule_set VARCHAR NOT NULL,  -- training | held_out
            suite_version INTEGER NOT NULL,
            run VARCHAR NOT NULL,  -- the run whose validation text the rules read
            rules INTEGER, seeds INTEGER,
            auroc DOUBLE, correct_mean DOUBLE, correct_std DOUBLE, token_lookup_mean DOUBLE,
            created_at TIMESTAMP,
            PRIMARY KEY (simulator_version, family, rule_set, suite_version, run)
        );
        CREATE VIEW score_calibration AS
            WITH newest AS (
                SELECT *, row_number() OVER (PARTITION BY simulator_version, family
                                             ORDER BY suite_version DESC, created_at DESC) AS k
                FROM simulator_calibration WHERE rule_set = 'held_out'
            )
            SELECT e.explanation_id, e.simulator, e.simulate_prompt AS simulator_version, c.family,
                   c.correct_mean, c.correct_std, c.token_lookup_mean, c.auroc, c.run AS calibration_run
            FROM explanations e JOIN newest c ON c.simulator_version = e.simulate_prompt AND c.k = 1;
        """,
    ),
    (
        7,
        """
        -- A circuit's size chosen on the selection pairs, the nodes added so that the held-out pairs
        -- meet the target, and why a circuit that still misses it is not sufficient.
        ALTER TABLE circuits ADD COLUMN selected_nodes INTEGER;
        ALTER TABLE circuits ADD COLUMN grown_nodes INTEGER;
        ALTER TABLE circuits ADD COLUMN note VARCHAR;
        """,
    ),
    (
        8,
        """
        -- Sentence embeddings of explanation texts, for search by meaning (explainer/store/search.py):
        -- cosine similarity with DuckDB's own array_cosine_similarity, no extension.
        CREATE TABLE explanation_embeddings (
            explanation_id VARCHAR PRIMARY KEY,  -- explanations.explanation_id
            embedder VARCHAR NOT NULL,           -- the sentence-embedding model, e.g. 'all-MiniLM-L6-v2'
            embedding FLOAT[384] NOT NULL,       -- unit length
            created_at TIMESTAMP
        );
        """,
    ),
    (
        9,
        """
        -- Who wrote each explanation: best-of-k pools the LLM's candidates with candidates written
        -- without an LLM (explainer/writers.py).
        ALTER TABLE explanations ADD COLUMN writer VARCHAR;
        UPDATE explanations SET writer = CASE WHEN kind IN ('llm', 'shuffled') THEN 'llm'
                                              WHEN kind = 'token_lookup' THEN 'token_lookup' END;
        DROP VIEW node_scores;
        CREATE VIEW node_scores AS
            WITH s AS (
                SELECT explanation_id,
                       max(value) FILTER (WHERE split = 'score' AND method = 'correlation') AS score,
                       max(value) FILTER (WHERE split = 'score' AND method = 'mean_window_correlation')
                           AS mean_window_correlation,
                       max(value) FILTER (WHERE split = 'score' AND method = 'r_squared') AS r_squared,
                       max(value) FILTER (WHERE split = 'score' AND method = 'absolute_deviation_explained')
                           AS absolute_deviation_explained,
                       max(value) FILTER (WHERE split = 'calibrate' AND method = 'correlation')
                           AS calibrate_score
                FROM scores GROUP BY explanation_id
            ), cc AS (
                SELECT DISTINCT cn.node_id, c.task  -- a node pruned for a task several times: one row
                FROM circuit_nodes cn JOIN circuits c ON c.circuit_id = cn.circuit_id
            )
            SELECT e.model, cc.task, e.node_id, n.name, n.layer, n.location, n.site, e.kind,
                   e.text AS explanation, e.writer, e.explainer, e.simulator, s.score, s.mean_window_correlation,
                   s.r_squared, s.absolute_deviation_explained, s.calibrate_score, e.failure,
                   e.purpose, e.settings_key, e.explanation_id, e.created_at
            FROM explanations e
            LEFT JOIN nodes n ON n.node_id = e.node_id
            LEFT JOIN cc ON cc.node_id = e.node_id
            LEFT JOIN s ON s.explanation_id = e.explanation_id
            WHERE e.selected;
        """,
    ),
    (
        10,
        """
        -- Pruning that searches (sparse_model/prune_search.py) and honest labels.
        ALTER TABLE circuits ADD COLUMN baseline_nodes INTEGER;
        ALTER TABLE circuits ADD COLUMN search_points INTEGER;
        ALTER TABLE circuits ADD COLUMN search_seconds DOUBLE;
        CREATE TABLE prune_points (
            circuit_id VARCHAR,
            point INTEGER,
            overrides JSON,
            settings JSON,
            nodes INTEGER,
            edges INTEGER,
            selection_loss DOUBLE,
            sufficiency_loss DOUBLE,
            sufficient BOOLEAN,
            seconds DOUBLE,
            chosen BOOLEAN,
            PRIMARY KEY (circuit_id, point)
        );
        DROP VIEW circuit_summary;
        CREATE VIEW circuit_summary AS
            SELECT c.model, c.task, c.status, c.n_nodes, c.n_edges, c.baseline_nodes, c.n_candidates,
                   c.full_loss, c.sufficiency_loss, c.necessity_loss, c.sufficient, c.target_loss,
                   t.random_labels, c.note, c.circuit_id
            FROM circuits c LEFT JOIN tasks t ON t.name = c.task;
        """,
    ),
    (
        11,
        """
        -- The number of requests in flight a job settled at (explainer/llm/limit.py adapts it).
        ALTER TABLE jobs ADD COLUMN concurrency INTEGER;
        DROP VIEW job_summary;
        CREATE VIEW job_summary AS
            WITH r AS (
                SELECT job_id, count(*) AS requests, count(*) FILTER (WHERE cache_hit) AS cache_hits,
                       count(*) FILTER (WHERE status <> 'ok') AS request_errors,
                       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
                       sum(cost) AS cost, max(created_at) AS last_request
                FROM llm_requests GROUP BY job_id
            ), e AS (
                SELECT job_id, count(DISTINCT node_id) AS nodes_done,
                       count(DISTINCT node_id) FILTER (WHERE failure IS NOT NULL OR text IS NULL) AS failures
                FROM explanations WHERE kind = 'llm' AND selected GROUP BY job_id
            )
            SELECT j.job_id, j.started_at, j.status, j.model, j.backend, j.llm_model,
                   coalesce(e.nodes_done, 0) AS nodes_done, coalesce(e.failures, 0) AS failures,
                   coalesce(r.requests, 0) AS requests, coalesce(r.cache_hits, 0) AS cache_hits,
                   coalesce(r.request_errors, 0) AS request_errors,
                   coalesce(r.prompt_tokens, 0) AS prompt_tokens, coalesce(r.completion_tokens, 0) AS completion_tokens,
                   r.cost,
                   date_diff('millisecond', j.started_at, coalesce(j.finished_at, r.last_request, j.started_at)) / 1000.0
                       AS seconds,
                   j.concurrency, j.settings_key, j.error, j.pid, j.command
            FROM jobs j LEFT JOIN r USING (job_id) LEFT JOIN e USING (job_id);
        """,
    ),    (
        12,
        """
        -- What each circuit node does for its task (explainer/jobs/roles.py, `circuits roles`).
        CREATE TABLE task_records (
            node_id VARCHAR, model VARCHAR, task VARCHAR,
            rank INTEGER,            -- row of the task's prefixes: 2 * pair + variant
            pair INTEGER, variant INTEGER, split VARCHAR, label VARCHAR,
            max_activation DOUBLE, tokens VARCHAR[], activations DOUBLE[], created_at TIMESTAMP,
            PRIMARY KEY (node_id, task, rank)
        );
        CREATE TABLE node_effects (
            circuit_id VARCHAR, node_id VARCHAR, model VARCHAR, task VARCHAR,
            effect_in_circuit DOUBLE, logit_diff_in_circuit DOUBLE,
            effect_in_model DOUBLE, logit_diff_in_model DOUBLE,
            direct_logit_diff DOUBLE,                 -- NULL: the node only reads
            promoted VARCHAR[], promoted_logits DOUBLE[], suppressed VARCHAR[], suppressed_logits DOUBLE[],
            n_examples INTEGER, created_at TIMESTAMP,
            PRIMARY KEY (circuit_id, node_id)
        );
        ALTER TABLE circuits ADD COLUMN effects JSON;  -- the baselines node_effects are measured against
        ALTER TABLE explanations ADD COLUMN task VARCHAR;  -- in-task explanation of this task; NULL: general
        CREATE VIEW node_roles AS
            WITH s AS (
                SELECT explanation_id, max(value) FILTER (WHERE split = 'score' AND method = 'correlation') AS score
                FROM scores GROUP BY explanation_id
            ), general AS (
                SELECT e.node_id, arg_max(e.text, e.created_at) AS general_explanation,
                       arg_max(s.score, e.created_at) AS general_score
                FROM explanations e LEFT JOIN s USING (explanation_id)
                WHERE e.selected AND e.kind = 'llm' AND e.purpose = 'circuit' GROUP BY e.node_id
            ), intask AS (
                SELECT e.node_id, e.task,
                       arg_max(e.text, e.created_at) FILTER (WHERE e.kind = 'llm') AS task_explanation,
                       arg_max(s.score, e.created_at) FILTER (WHERE e.kind = 'llm') AS task_score,
                       arg_max(s.score, e.created_at) FILTER (WHERE e.kind = 'token_lookup') AS task_token_lookup_score
                FROM explanations e LEFT JOIN s USING (explanation_id)
                WHERE e.selected AND e.purpose = 'task' GROUP BY e.node_id, e.task
            )
            SELECT f.model, f.task, f.circuit_id, f.node_id, n.name, n.layer, n.site,
                   g.general_explanation, g.general_score,
                   t.task_explanation, t.task_score, t.task_token_lookup_score,
                   f.effect_in_circuit, f.effect_in_model, f.logit_diff_in_circuit, f.logit_diff_in_model,
                   f.direct_logit_diff, f.promoted, f.suppressed, f.n_examples
            FROM node_effects f
            LEFT JOIN nodes n ON n.node_id = f.node_id
            LEFT JOIN general g ON g.node_id = f.node_id
            LEFT JOIN intask t ON t.node_id = f.node_id AND t.task = f.task;
        """,
    ),    (
        13,
        """
        -- The detection and fuzzing scorers (explainer/excerpt_scorers.py, `circuits explain --scorer`):
        -- their scores are rows of `scores` (split 'score'); node_scores shows them beside the correlation.
        DROP VIEW node_scores;
        CREATE VIEW node_scores AS
            WITH s AS (
                SELECT explanation_id,
                       max(value) FILTER (WHERE split = 'score' AND method = 'correlation') AS score,
                       max(value) FILTER (WHERE split = 'score' AND method = 'mean_window_correlation')
                           AS mean_window_correlation,
                       max(value) FILTER (WHERE split = 'score' AND method = 'r_squared') AS r_squared,
                       max(value) FILTER (WHERE split = 'score' AND method = 'absolute_deviation_explained')
                           AS absolute_deviation_explained,
                       max(value) FILTER (WHERE split = 'calibrate' AND method = 'correlation')
                           AS calibrate_score,
                       max(value) FILTER (WHERE split = 'score' AND method = 'detection') AS detection,
                       max(value) FILTER (WHERE split = 'score' AND method = 'fuzzing') AS fuzzing,
                       max(value) FILTER (WHERE split = 'score' AND method = 'detection_auroc') AS detection_auroc,
                       max(value) FILTER (WHERE split = 'score' AND method = 'fuzzing_auroc') AS fuzzing_auroc
                FROM scores GROUP BY explanation_id
            ), cc AS (
                SELECT DISTINCT cn.node_id, c.task  -- a node pruned for a task several times: one row
                FROM circuit_nodes cn JOIN circuits c ON c.circuit_id = cn.circuit_id
            )
            SELECT e.model, cc.task, e.node_id, n.name, n.layer, n.location, n.site, e.kind,
                   e.text AS explanation, e.writer, e.explainer, e.simulator, s.score, s.mean_window_correlation,
                   s.r_squared, s.absolute_deviation_explained, s.calibrate_score, s.detection, s.fuzzing,
                   s.detection_auroc, s.fuzzing_auroc, e.failure,
                   e.purpose, e.settings_key, e.explanation_id, e.created_at
            FROM explanations e
            LEFT JOIN nodes n ON n.node_id = e.node_id
            LEFT JOIN cc ON cc.node_id = e.node_id
            LEFT JOIN s ON s.explanation_id = e.explanation_id
            WHERE e.selected;
        """,
    ),
]
