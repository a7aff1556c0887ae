"""SoundMindTraining: builders of its children, the status it shows, and the reconcile loop."""
