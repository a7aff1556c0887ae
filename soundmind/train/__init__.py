"""The trainer runtime: `soundmind train` turns a TrainingSpec into a verl GRPO run on one node or
many, and reports its progress and checkpoints to the SoundMindTraining's status."""
