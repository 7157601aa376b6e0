"""tap-redis-stream: read Redis Streams into Singer messages, resumably."""
