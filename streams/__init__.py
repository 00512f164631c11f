"""Video ingest: readers for RTSP, files and MJPEG, frame timing, reconnect, recording and clips."""
