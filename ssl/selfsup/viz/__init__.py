"""Pictures of what a model learned: attention maps, embedding plots."""
