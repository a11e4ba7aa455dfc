"""The agent: networks (torsos and heads as one TorchRL ``ActorValueOperator``) and recurrent cores."""
