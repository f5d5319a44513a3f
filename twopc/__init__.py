"""Two-phase commit (ORDER_FLOW=2pc) beside the coordinator in orders/flows/twopc.py: the coordinator log (the
durable decision per global transaction, in the orders database), the branches' identifiers, recovery of
in-doubt branches (`manage.py recover_2pc`), the start-up check of the participants, and their admin. Imports
no service app: the coordinator tells it which database aliases take part."""
