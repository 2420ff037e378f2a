"""The names of a run folder's files (what each holds: `checkpoint`), in a module without torch, so
that telling a run folder from a model name (`run.is_run_folder`) costs no start-up time."""

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.json"
TOKENIZER_FILE = "tokenizer.json"
TRAIN_TOKENS_FILE = "tokens_train.npy"
VAL_TOKENS_FILE = "tokens_val.npy"
