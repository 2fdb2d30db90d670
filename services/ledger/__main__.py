from services.ledger.wiring import main

main()
