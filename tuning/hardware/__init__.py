"""The machine: which device trains and answers, in which precision, decided by measuring this machine."""
