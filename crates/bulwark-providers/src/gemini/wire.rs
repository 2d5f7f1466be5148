//! Wire structs of the gemini API (stub: to be written).
