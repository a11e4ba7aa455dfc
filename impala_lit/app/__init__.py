"""The application around the learner: the command line, MLflow tracking, checkpoints and signals,
evaluation games, the status line and the console."""
