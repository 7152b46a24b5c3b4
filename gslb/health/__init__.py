"""Health checking: checks say pass/fail, ``state`` applies rise/fall, ``prober`` schedules."""
