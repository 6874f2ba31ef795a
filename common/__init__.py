"""Concepts every part of Vybe Live shares (gateway, workers, db, moderation): imports nothing of ours."""
