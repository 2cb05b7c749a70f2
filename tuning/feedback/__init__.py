"""Learn from the chat: a visitor's votes and corrections on side-by-side answers, and the training data they make."""
