"""The learner: V-trace (``vtrace``), IMPALA's and APPO's objectives, replay, and ``RolloutSource``,
all the learner knows of whatever feeds it rollouts."""
