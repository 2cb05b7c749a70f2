"""The scorecard's further questions: did the model forget, does it know its limits, would retrieval have done it."""
