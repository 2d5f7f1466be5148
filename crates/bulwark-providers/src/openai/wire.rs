//! Wire structs of the openai API (stub: to be written).
