"""Leased work queues: the shared lease life-cycle (leasing.py) and each queue: albums
(metadata), download tasks, archive URL tasks; and the workers that lease from them.
"""
