"""What a shared Space lets a visitor do: caps on every size, count, length and duration, fair admission,
addresses and paths a visitor may not reach."""
