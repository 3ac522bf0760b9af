"""The two stages: evaluate (a labeled split: metrics, report) and predict (a CSV), with
the rules of where they write."""
