from services.signing.wiring import main

main()
