"""The command layer: `train.py` (`train`), `certify.py` (`certify_cli` and its subcommands
`radius`, `curve`, `certify_dataset`, `analyze`, `attack`), their shared noise options
(`noise_args`) and error boundary (`errors`). `train`, `certify_dataset` and `attack` need
Lightning; `certify_cli` and `attack` import it only when their work starts, so `radius`,
`curve` and `analyze` run without it."""
