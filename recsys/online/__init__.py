"""The online engine: everything a serving replica computes, with no Ray and no HTTP in it.

    catalog     items, their fields, filters, popularity, users' logged histories and purchases
    retrieve    user vectors and ANN retrieval (+ exact scores for items added while serving)
    rank        the CTR ranker's click probabilities of candidates
    search      keyword search jobs over the versioned text index
    explain     what drove a score (history occlusion, additive attribute shares)
    cold_start  items added while serving: their vectors and the durable log replicas share
    engine      OnlineEngine: one servable version, built from one typed EngineSpec; the
                recommend / rank / search / add_item API that the Ray Serve deployment, the bare
                benchmark server and offline evaluation call
"""
