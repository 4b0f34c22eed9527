"""The TC-200 simulator: simulated terminals and USB bus, and the fleet that runs them.

What is here: a TC-200's state and faults (``device``), the firmware that answers its
USB frames (``firmware``), a pyusb backend that carries them (``usb_backend``), and the
fleet behind ``tms simulate`` (``fleet``, split over processes by ``fleet_processes``,
reading the credentials file ``fleet_file`` that ``tms up`` writes).

It may import the agent (the real driver and runtime run unchanged on top of it),
``shared`` and pyusb. The agent never imports it: only the composition root
``agent/cli.py`` does, for ``tms simulate`` and ``tms agent --simulated-device``
(tests/unit/test_agent_sim_boundary.py checks this).
"""
