"""Small Streamlit building blocks of the Compare page: sidebar controls, the grid,
charts, the threshold panel and the downloads. Each is a thin function over camcore."""
