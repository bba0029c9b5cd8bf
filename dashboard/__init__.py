"""CAM Studio's Streamlit dashboard: widgets, caching and layout over ``camcore``.

Run it with ``make run`` (or ``streamlit run dashboard/app.py``). The dashboard does
no math of its own: maps, overlays and metrics all come from ``camcore``.
"""
