"""Texts the simulated users post.

``TOXIC`` texts are flagged at the default thresholds by every bundled scorer
(``light`` and ``embedded``), so each toxic post must reach ``mod:flagged`` when a
worker runs; ``FRIENDLY`` texts are flagged by neither (checked when the lists were
written; a moderator dismisses a false positive instead of hiding it anyway).
"""

from __future__ import annotations

TOXIC: tuple[str, ...] = (
    "You are a pathetic idiot and everyone here hates you",
    "Shut up, you worthless loser, nobody wants you here",
    "I know where you live and I will hurt you",
    "You're a disgusting moron, delete your account",
    "Go kill yourself, nobody would miss you",
    "I'm going to find you and beat you until you stop breathing",
    "What a stupid, ugly freak you are",
    "You brainless clown, your posts are garbage like you",
    "Everyone who follows you is a braindead idiot",
    "I will make you regret ever posting this, watch your back",
    "You are trash and your family is trash",
    "Nobody cares about your stupid journaling, you pathetic fool",
    "Keep posting and I'll come to your house and smash your face",
    "You're an absolute waste of space, you dumb idiot",
    "Stop whining, you spineless worthless coward",
    "Your meditation posts are as fake and stupid as you are, moron",
    "I hope something terrible happens to you and your kids",
    "You are the dumbest person on this whole app",
    "Shut your mouth, you ignorant little idiot",
    "I'm going to shoot you, you deserve to die",
)

FRIENDLY: tuple[str, ...] = (
    "Ten minutes of breathwork before breakfast, feeling calm",
    "Grateful for my friends who checked in on me today",
    "Day 12 of journaling: small steps still count",
    "Went for a long walk by the river and the sunset was beautiful",
    "Tried a new yoga flow this morning and my back feels better",
    "Proud of myself for drinking enough water all week",
    "Reading a chapter before bed instead of scrolling",
    "Finished my first 5k run, slow but steady",
    "Thank you all for the kind words yesterday",
    "Stretching break at work, highly recommend it",
    "Planted tomatoes on the balcony today",
    "Starting the week with a clear plan and a calm mind",
    "A gentle reminder to be kind to yourself today",
    "Three things I'm thankful for: health, family, music",
    "Sending good vibes to anyone having a hard week",
    "Journaled about what went well today, it helped",
    "Slow morning, warm tea, deep breaths",
)

REACTIONS: tuple[str, ...] = ("HEART", "CLAP", "FIRE", "PEACE", "INSPIRE", "STRENGTH", "GRATITUDE", "MINDFUL")
VYBE_TYPES: tuple[str, ...] = ("REFLECTION", "MILESTONE", "INSPIRATION", "GRATITUDE", "PROGRESS_UPDATE")
